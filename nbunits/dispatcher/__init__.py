"""The web dispatcher: maps an edX link onto a student's notebook unit."""
