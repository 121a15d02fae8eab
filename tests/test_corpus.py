"""The corpus catalog against a real local HTTP server (no mocks of urllib) and real files."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from textgen import corpus
from textgen.corpus import CorpusError, CorpusNotFound, load_corpus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
if not SHARED.is_dir():  # a checkout elsewhere: the layout the design names
    SHARED = Path("/work/shared/corpora")
TFJS_SHA256 = "3280bdfb1238fd1e5e1ada69fbad981dd754f78dcce210c00878ab988a262794"


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FileServer:
    """A real HTTP server on 127.0.0.1 serving bytes by path and counting requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture
def tfjs_bytes(tmp_path) -> bytes:
    """The reference tf.js, copied to a temporary folder at test time."""
    copy = tmp_path / "served" / "tf.js"
    copy.parent.mkdir()
    shutil.copyfile(SHARED / "tfjs-code.txt", copy)
    return copy.read_bytes()


def point(monkeypatch, name: str, *addresses: str, npm: bool = False):
    """Make built-in `name` fetch from `addresses` (and from npm only when asked)."""
    entry = corpus.BUILTINS[name]
    replaced = dataclasses.replace(entry, addresses=addresses, npm=entry.npm if npm else None)
    monkeypatch.setitem(corpus.BUILTINS, name, replaced)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- built-in corpora -------------------------------------------------------------------------------

def test_tfjs_code_is_fetched_verified_cached_and_reused(server, tfjs_bytes, monkeypatch, data_dir):
    server.files["/tf.js"] = tfjs_bytes
    point(monkeypatch, "tfjs-code", server.url("/tf.js"))

    first = load_corpus("tfjs-code")
    assert first.builtin and first.name == "tfjs-code"
    assert first.sha256 == TFJS_SHA256
    assert first.path == data_dir / "corpora" / "tfjs-code.txt"
    assert first.path.read_bytes() == tfjs_bytes
    assert first.text == tfjs_bytes.decode("utf-8").replace("\r\n", "\n")
    assert server.requests == ["/tf.js"]

    second = load_corpus("tfjs-code")
    assert second.sha256 == TFJS_SHA256 and second.text == first.text
    assert server.requests == ["/tf.js"]  # served from the cache
    assert files_under(data_dir / "corpora") == [first.path]  # no temporary files left


def test_corrupted_download_is_rejected_and_leaves_nothing(server, tfjs_bytes, monkeypatch, data_dir):
    altered = tfjs_bytes.replace(b"tensorflow", b"tensorfl0w", 1)
    server.files["/tf.js"] = altered
    point(monkeypatch, "tfjs-code", server.url("/tf.js"))

    with pytest.raises(CorpusError) as e:
        load_corpus("tfjs-code")
    message = str(e.value)
    assert TFJS_SHA256 in message
    assert hashlib.sha256(altered).hexdigest() in message
    assert server.url("/tf.js") in message
    assert files_under(data_dir / "corpora") == []


def test_cached_file_with_wrong_hash_is_refused_and_fetched_again(server, tfjs_bytes, monkeypatch, caplog):
    server.files["/tf.js"] = tfjs_bytes
    point(monkeypatch, "tfjs-code", server.url("/tf.js"))
    path = load_corpus("tfjs-code").path
    damaged = b"not the tfjs source\n"
    path.write_bytes(damaged)

    again = load_corpus("tfjs-code")
    assert again.sha256 == TFJS_SHA256 and path.read_bytes() == tfjs_bytes
    assert len(server.requests) == 2
    assert hashlib.sha256(damaged).hexdigest() in caplog.text and TFJS_SHA256 in caplog.text


def test_cached_file_with_wrong_hash_and_no_source_names_both(monkeypatch, data_dir):
    point(monkeypatch, "tfjs-code", f"http://127.0.0.1:{closed_port()}/tf.js")
    (data_dir / "corpora").mkdir(parents=True)
    (data_dir / "corpora" / "tfjs-code.txt").write_bytes(b"damaged\n")
    with pytest.raises(CorpusError) as e:
        load_corpus("tfjs-code")
    assert TFJS_SHA256 in str(e.value) and hashlib.sha256(b"damaged\n").hexdigest() in str(e.value)


def test_unpinned_corpus_is_trusted_on_first_use_then_verified(server, monkeypatch, data_dir):
    original = (SHARED / "nietzsche.txt").read_bytes()
    server.files["/nietzsche.txt"] = b"\xef\xbb\xbf" + original.replace(b"\n", b"\r\n")
    point(monkeypatch, "nietzsche", server.url("/nietzsche.txt"))

    first = load_corpus("nietzsche")
    assert first.text == original.decode("utf-8")  # BOM dropped, CRLF made LF
    sidecar = data_dir / "corpora" / "nietzsche.txt.sha256"
    assert sidecar.read_text().split()[0] == first.sha256
    info = {i.name: i for i in corpus.list_builtin()}["nietzsche"]
    assert info.sha256 == first.sha256 and not info.pinned and info.cached
    assert info.size == len(server.files["/nietzsche.txt"])

    # Upstream changes: a fresh fetch no longer matches what was trusted first.
    first.path.unlink()
    server.files["/nietzsche.txt"] = b"something else entirely\n"
    with pytest.raises(CorpusError) as e:
        load_corpus("nietzsche")
    assert first.sha256 in str(e.value) and "nietzsche.txt.sha256" in str(e.value)
    assert not first.path.exists()


def test_unreachable_addresses_are_named_with_how_to_pass_a_file(monkeypatch):
    address = f"http://127.0.0.1:{closed_port()}/t1.verne.txt"
    point(monkeypatch, "julesverne", address)
    with pytest.raises(CorpusError) as e:
        load_corpus("julesverne")
    message = str(e.value)
    assert address in message
    assert "pass a path to the text file instead" in message


def test_tfjs_code_names_the_address_and_the_npm_attempt(monkeypatch):
    port = closed_port()
    address = f"http://127.0.0.1:{port}/tf.js"
    point(monkeypatch, "tfjs-code", address, npm=True)
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(CorpusError) as e:
        load_corpus("tfjs-code")
    message = str(e.value)
    assert address in message
    assert "npm pack @tensorflow/tfjs@0.11.7" in message
    assert "pass a path to the text file instead" in message
    if shutil.which("npm"):
        assert "ECONNREFUSED" in message  # npm's own error, not its stack trace
        assert "    at " not in message


def test_tfjs_code_without_npm_says_npm_is_missing(monkeypatch, tmp_path):
    point(monkeypatch, "tfjs-code", f"http://127.0.0.1:{closed_port()}/tf.js", npm=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(CorpusError, match="npm is not installed"):
        load_corpus("tfjs-code")


@pytest.fixture
def npm_registry_reachable():
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    try:
        subprocess.run(["npm", "view", "@tensorflow/tfjs@0.11.7", "version"], check=True,
                       capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("the npm registry is not reachable")


def test_tfjs_code_resolves_through_npm_pack(npm_registry_reachable, monkeypatch):
    point(monkeypatch, "tfjs-code", f"http://127.0.0.1:{closed_port()}/tf.js", npm=True)
    got = load_corpus("tfjs-code")
    assert got.sha256 == TFJS_SHA256
    assert hashlib.sha256(got.path.read_bytes()).hexdigest() == TFJS_SHA256


def test_list_builtin_shows_the_original_four():
    infos = {i.name: i for i in corpus.list_builtin()}
    assert set(infos) == {"nietzsche", "julesverne", "shakespeare", "tfjs-code"}
    assert infos["tfjs-code"].sha256 == TFJS_SHA256 and infos["tfjs-code"].pinned
    assert infos["tfjs-code"].npm_package == "@tensorflow/tfjs@0.11.7"
    assert infos["shakespeare"].addresses[0].endswith("/t8.shakespeare.txt")
    assert all(not i.cached and i.size is None for i in infos.values())


# ---- local files --------------------------------------------------------------------------------------

def test_local_file_is_a_corpus(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    got = load_corpus(str(path))
    assert got.text == "line one\nline two\n"
    assert got.name == "mine" and not got.builtin and got.path == path.resolve()
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_existing_file_without_slash_is_a_corpus(tmp_path, monkeypatch):
    (tmp_path / "plain.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    assert load_corpus("plain.txt").text == "hello\n"


def test_missing_file_names_the_path(tmp_path, monkeypatch):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(CorpusError) as e:
        load_corpus(missing)
    assert repr(missing) in str(e.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match=r"'\./nope\.txt'"):
        load_corpus("./nope.txt")


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"not UTF-8 text.*offset 3"):
        load_corpus(str(path))


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(str(path))


def test_unknown_name_lists_builtins():
    with pytest.raises(CorpusError) as e:
        load_corpus("moby-dick")
    for name in ("nietzsche", "julesverne", "shakespeare", "tfjs-code"):
        assert name in str(e.value)
    assert "path" in str(e.value)


# ---- uploads ---------------------------------------------------------------------------------------

def test_upload_round_trip(data_dir):
    data = b"\xef\xbb\xbfTo be, or not to be\r\n"
    saved = corpus.save_upload(data, "hamlet bit")
    assert saved.name == "upload-" + hashlib.sha256(data).hexdigest()[:16]
    assert corpus.UPLOAD_ID.fullmatch(saved.name)
    assert saved.path == data_dir / "corpora" / "uploads" / f"{saved.name}.txt"
    assert saved.text == "To be, or not to be\n"

    again = corpus.save_upload(data, "other name")  # same bytes, same id
    assert again.name == saved.name
    assert corpus.load_upload(saved.name).text == saved.text
    assert load_corpus(saved.name).sha256 == saved.sha256
    [info] = corpus.list_uploads()
    assert (info.corpus_id, info.name, info.size) == (saved.name, "hamlet bit", len(data))
    assert files_under(data_dir / "corpora" / "uploads") == sorted(
        [saved.path, saved.path.with_suffix(".json")])


@pytest.mark.parametrize("bad", ["../../etc/passwd", "upload-../../etc/x", "upload-0123456789ABCDEF",
                                 "upload-0123456789abcdef\n", "upload-0123", ""])
def test_bad_upload_ids_are_refused(bad):
    with pytest.raises(CorpusError) as e:
        corpus.load_upload(bad)
    assert not isinstance(e.value, CorpusNotFound)


def test_absent_upload_is_not_found():
    with pytest.raises(CorpusNotFound):
        corpus.load_upload("upload-0123456789abcdef")


def test_bad_uploads_are_refused(data_dir):
    with pytest.raises(CorpusError, match="not UTF-8"):
        corpus.save_upload(b"\xff\xfe", "binary")
    with pytest.raises(CorpusError, match="empty"):
        corpus.save_upload(b"", "nothing")
    assert files_under(data_dir / "corpora") == []
