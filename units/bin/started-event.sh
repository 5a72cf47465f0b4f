# nbunits: the "started" event (nbunits/core/events.py, Event.STARTED), sent by a
# student's container unit (ExecStartPost=) once Jupyter said READY=1: one journal
# entry with the event's fields, by util-linux's logger, so that no Python starts
# at every start. Usage: sh started-event.sh COURSE USER (systemd sets MAINPID). To the
# system journal: the unit's commands see the students' journal namespace at
# /run/systemd/journal (LogNamespace=), PID 1's mount namespace the system's.
course=$1 user=$2 seconds=
# READY_SECONDS: since the main process (conmon, which podman started with the
# container) began; both clocks in 1/100 s (/proc/uptime, /proc/PID/stat's 22nd
# field in USER_HZ, 100 on Linux). Shell builtins only.
if [ -n "$MAINPID" ] && read -r up _ </proc/uptime && read -r stat <"/proc/$MAINPID/stat"; then
    set -- ${stat##*) }
    elapsed=$(( ${up%.*}${up#*.} - ${20} ))
    seconds=$(printf '%d.%02d' $((elapsed / 100)) $((elapsed % 100)))
fi
printf '%s\n' "MESSAGE_ID=1f4132122a444969877e85da90c1725f" "NBUNITS_EVENT=started" \
    "PRIORITY=6" "SYSLOG_IDENTIFIER=nbunits" "COURSE=$course" "STUDENT=$user" \
    ${seconds:+"READY_SECONDS=$seconds"} \
    "MESSAGE=$user's Jupyter for course $course answers" |
    exec /usr/bin/nsenter --mount=/proc/1/ns/mnt /usr/bin/logger --journald
