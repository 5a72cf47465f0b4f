import json
import socket
import threading

from nbunits import ready


def test_the_gate_asks_for_the_students_base_url_by_the_servers_name(tmp_path, monkeypatch):
    (tmp_path / "jupyter.json").write_text(json.dumps({"ServerApp": {
        "base_url": "/nb/c/u/cap/", "local_hostnames": ["notebooks.example.org"]}}))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert ready.jupyter_settings() == ("/nb/c/u/cap/", "notebooks.example.org")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "missing"))
    assert ready.jupyter_settings() == ("/", "localhost")


def test_the_gate_waits_until_something_answers_http(tmp_path):
    path = str(tmp_path / "jupyter.sock")
    assert not ready.wait(path, "/api", timeout=0.05)
    seen = []

    def serve() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen(1)
            conn, _ = server.accept()
            seen.append(conn.recv(100))
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    assert ready.wait(path, "/nb/c/u/cap/api", timeout=5)
    thread.join()
    assert seen[0].startswith(b"GET /nb/c/u/cap/api HTTP/1.0")
