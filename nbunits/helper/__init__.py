"""Root's side: nbunits-helper and the privileged steps.

Runs as: root. nbunits-helper (service.py; socket-activated, reachable only by the
dispatcher's group) validates every request again and acts on a whole valid one:
users, homes, copies, capabilities, starts (provision.py, actions.py...). The same
steps serve the students' units (quota.py, hostlock.py, activity.py run from their
ExecStart= lines) and the admin's tools. May import: nbunits.core. Imported by:
nbunits.admin only (never the dispatcher or the generator).
"""
