"""Actions for the workers' tests (unit/test_student.py): the worker imports them by
name, as it imports nbunits.helper.actions:act on a server."""

import os
import time

from nbunits.core.config import Settings
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.protocol import StudentRequest, StudentState


def act(settings: Settings, request: StudentRequest) -> StudentState:
    """"info" answers with the worker's pid; "reset" and "submit" sleep as many tenths of a second
    as the notebook's name says; "share" fails as a student's bound does."""
    if request.what in ("reset", "submit"):
        time.sleep(int(request.notebook.removesuffix(".ipynb")) / 10)
    if request.what == "share":
        raise NbunitsError(Code.STUDENT_LIMIT, "too many", student_hint="stop one")
    if request.what == "unshare":
        raise RuntimeError("a bug")
    return StudentState(str(os.getpid()), request.course, request.notebook, False, (), "", "")
