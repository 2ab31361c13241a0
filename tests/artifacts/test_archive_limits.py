"""Archives are read manifest first: nothing is written that the manifest does not declare, nothing is left behind."""

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from bundle_samples import write_bundle
from click.testing import CliRunner

from llmc.artifacts import Bundle, pack
from llmc.cli.main import main
from llmc.errors import BundleError


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    """A private $TMPDIR, to show that nothing is left in it."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def bundle(tmp_path):
    write_bundle(tmp_path / "b.llmc")
    return tmp_path / "b.llmc"


def _members(bundle: Path) -> list[tuple[str, bytes]]:
    return sorted((p.relative_to(bundle).as_posix(), p.read_bytes()) for p in bundle.rglob("*") if p.is_file())


def _tar(path: Path, members: list[tuple[str, bytes]], big: dict[str, int] | None = None) -> Path:
    """A plain tar of `members`; `big` gives members of that many zero bytes (streamed, not held)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name in (big or {}):
                info.size = big[name]
                tar.addfile(info, _Zeros(info.size))
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def _cli_refuses(args, *words):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]


def _sparse_tar(tmp_path: Path, bundle: Path, fmt: str) -> Path:
    """GNU tar's sparse member in place of the weights (3 KB of archive, 64 MiB extracted)."""
    src = tmp_path / f"src-{fmt}"
    src.mkdir()
    for name, data in _members(bundle):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    with open(src / "weights/model.safetensors", "r+b") as f:
        f.truncate(64 << 20)
    out = tmp_path / f"sparse-{fmt}.tar"
    subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", str(out), "-C", str(src), "."], check=True)
    return out


def _cases(tmp_path: Path, bundle: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    members = _members(bundle)
    plain = pack(bundle, tmp_path / "good.tar").read_bytes()
    weights = dict(members)["weights/model.safetensors"]
    cases = {
        "gzip bomb": (tmp_path / "bomb.tar.gz", ("gzip-compressed",)),
        "member larger than listed": (_tar(tmp_path / "big.tar", members, {"weights/model.safetensors": 32 << 20}),
                                      ("is 33554432 bytes, the manifest says",)),
        "unlisted member": (_tar(tmp_path / "extra.tar", members + [("notes/x.bin", b"x" * 1000)]),
                            ("'notes/x.bin' is not listed in the manifest",)),
        "missing member": (_tar(tmp_path / "missing.tar", [m for m in members if m[0] != "impls.lock.json"]),
                           ("impls.lock.json is listed in the manifest but not in the archive",)),
        "no manifest": (_tar(tmp_path / "nomanifest.tar", [m for m in members if m[0] != "manifest.json"]),
                        ("has no manifest.json",)),
        "manifest lists more than the archive holds": (
            _tar(tmp_path / "lying.tar", [m for m in members if m[0] != "weights/model.safetensors"]
                 + [("weights/model.safetensors", weights[:-8])]), ("the manifest says",)),
        "not a tar": (tmp_path / "junk.tar", ("not a bundle archive",)),
    }
    with gzip.open(tmp_path / "bomb.tar.gz", "wb") as f:  # 1 GB of zeros in a few MB: never decompressed
        f.write(plain)
        f.write(bytes(8 << 20))
    (tmp_path / "junk.tar").write_bytes(b"\x00junk" * 100)
    if subprocess.run(["tar", "--version"], capture_output=True).returncode == 0:
        cases["sparse member (gnu)"] = (_sparse_tar(tmp_path, bundle, "gnu"), ("weights/model.safetensors",))
        cases["sparse member (pax)"] = (_sparse_tar(tmp_path, bundle, "pax"), ("sparse",))
    return cases


def test_hostile_archives_are_refused_in_one_line_leaving_nothing(tmp_path, bundle, tmpdir_env):
    for name, (archive, words) in _cases(tmp_path, bundle).items():
        size = archive.stat().st_size
        for command in ("verify", "run", "inspect"):
            args = [command, archive] + (["--prompt", "hi", "--device", "cpu"] if command == "run" else [])
            _cli_refuses(args, *words)
        with pytest.raises(BundleError):
            Bundle.open(archive)
        assert list(tmpdir_env.iterdir()) == [], name
        assert archive.stat().st_size == size


def test_extraction_writes_exactly_what_the_manifest_declares(tmp_path, bundle, tmpdir_env):
    archive = pack(bundle, tmp_path / "good.tar")
    with Bundle.open(archive) as opened:
        written = sum(p.stat().st_size for p in opened.path.rglob("*") if p.is_file())
        manifest = (opened.path / "manifest.json").stat().st_size
        assert written == manifest + sum(f["size"] for f in opened.manifest["files"].values())
    assert list(tmpdir_env.iterdir()) == []


def test_pack_never_overwrites(tmp_path, bundle):
    target = tmp_path / "model.tar"
    target.write_bytes(b"the user's file")
    _cli_refuses(["pack", bundle, "-o", target], "already exists")
    assert target.read_bytes() == b"the user's file"
    os.symlink(tmp_path / "elsewhere", tmp_path / "link.tar")
    _cli_refuses(["pack", bundle, "-o", tmp_path / "link.tar"], "already exists")
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.llmc", "link.tar", "model.tar"]


_HOLD = """
import sys, time
from llmc.artifacts import Bundle
bundle = Bundle.open(sys.argv[1])
print(bundle.path, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_an_archive_is_open_removes_its_extraction(tmp_path, bundle, tmpdir_env, signum):
    archive = pack(bundle, tmp_path / "good.tar")
    env = {**os.environ, "TMPDIR": str(tmpdir_env)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(archive)], stdout=subprocess.PIPE, text=True, env=env)
    extracted = Path(proc.stdout.readline().strip())
    assert extracted.is_dir() and extracted.parent == tmpdir_env
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 128 + signum
    deadline = time.monotonic() + 5
    while extracted.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not extracted.exists() and list(tmpdir_env.iterdir()) == []


def test_manifest_first(tmp_path, bundle, tmpdir_env):
    """An archive whose manifest comes last is read the same way: nothing is extracted before it is checked."""
    members = _members(bundle)
    manifest = [m for m in members if m[0] == "manifest.json"]
    archive = _tar(tmp_path / "late.tar", [m for m in members if m[0] != "manifest.json"] + manifest)
    with Bundle.open(archive) as opened:
        assert json.loads((opened.path / "manifest.json").read_bytes())["root_digest"]


def test_extractions_of_killed_processes_are_removed_by_the_next_open(tmp_path, bundle, tmpdir_env):
    archive = pack(bundle, tmp_path / "good.tar")
    env = {**os.environ, "TMPDIR": str(tmpdir_env)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(archive)], stdout=subprocess.PIPE, text=True, env=env)
    extracted = Path(proc.stdout.readline().strip())
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    assert extracted.is_dir()
    mine = tmpdir_env / "llmc-bundle-notes"  # not an extraction of ours by name: kept
    mine.mkdir()
    with Bundle.open(archive) as opened:
        assert not extracted.exists() and opened.path.exists() and mine.exists()
    assert sorted(p.name for p in tmpdir_env.iterdir()) == ["llmc-bundle-notes"]
