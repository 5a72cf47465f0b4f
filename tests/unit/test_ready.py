import socket
import threading
import time

from nbunits import ready


def test_the_gate_waits_until_the_socket_listens(tmp_path):
    path = str(tmp_path / "jupyter.sock")
    assert not ready.wait(path, timeout=0.05)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = threading.Event()

    def start() -> None:
        time.sleep(0.2)
        server.bind(path)  # bound, not yet listening: refused
        bound.set()
        time.sleep(0.2)
        server.listen(1)

    thread = threading.Thread(target=start)
    thread.start()
    try:
        t0 = time.monotonic()
        assert ready.wait(path, timeout=5)
        assert bound.is_set() and time.monotonic() - t0 >= 0.35
        thread.join()
        assert ready.listens(path) is True
    finally:
        server.close()
    assert ready.listens(str(tmp_path / "missing" / "x.sock")) is None


def test_the_gate_sleeps_while_nothing_happens(tmp_path):
    # inotify: no busy polling while Jupyter starts (a burst starts many at once).
    watch = ready.Watch(str(tmp_path))
    assert watch.fd >= 0
    cpu0 = time.process_time()
    assert not ready.wait(str(tmp_path / "jupyter.sock"), timeout=1.0)
    assert time.process_time() - cpu0 < 0.05
    watch.close()


def test_event_levels_are_loggings():
    # events.py spells them as numbers (importing logging slows the gate's start-up).
    import logging

    from nbunits import events
    assert (events.ERROR, events.WARNING, events.INFO) == (logging.ERROR, logging.WARNING,
                                                           logging.INFO)
