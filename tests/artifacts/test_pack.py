import io
import os
import tarfile

import pytest
from bundle_samples import write_bundle
from click.testing import CliRunner

from llmc.artifacts import Bundle, pack, unpack, verify_bundle
from llmc.cli.pack import pack as pack_command
from llmc.errors import BundleError, UserError


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "b.llmc"
    write_bundle(out)
    return out


def test_round_trip(bundle, tmp_path):
    archive = pack(bundle, tmp_path / "model.llmc.tar")
    with Bundle.open(archive) as b:
        extracted = b.path
        assert b.source == archive and str(tmp_path) not in str(extracted)
        for name in b.manifest["files"]:
            assert b.file(name).read_bytes() == (bundle / name).read_bytes()
        assert b.plans() == ["decode_b2", "prefill_t16"]
    assert not extracted.exists()  # the extraction directory goes with the bundle
    assert verify_bundle(archive).ok


def test_archive_is_deterministic(tmp_path):
    old = os.umask(0o077)
    try:
        write_bundle(tmp_path / "a.llmc")
    finally:
        os.umask(old)
    write_bundle(tmp_path / "b.llmc")
    for i, path in enumerate(sorted((tmp_path / "b.llmc").rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + i))
    one, two = pack(tmp_path / "a.llmc", tmp_path / "a.tar"), pack(tmp_path / "b.llmc", tmp_path / "b.tar")
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_pack_refuses_tampered_bundle_and_bad_output(bundle, tmp_path):
    with pytest.raises(UserError, match="is inside the bundle being packed"):
        pack(bundle, bundle / "x.tar")
    with pytest.raises(UserError, match="is a directory"):
        pack(bundle, tmp_path)
    (bundle / "impls.lock.json").write_bytes(b"{}\n")
    with pytest.raises(BundleError, match="impls.lock.json: 3 bytes, the manifest says"):
        pack(bundle, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def _evil_tar(path, members):
    """members: (TarInfo, data or None)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    return tarfile.TarInfo(name), data


def _link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("members, message", [
    ([_file("../x")], "member '../x' would be written outside the extraction directory"),
    ([_file("a/../../x")], "would be written outside the extraction directory"),
    ([_file("/etc/x")], "member '/etc/x' would be written outside the extraction directory"),
    ([_link("manifest.json", tarfile.SYMTYPE, "/etc/passwd")], "member 'manifest.json' is a symbolic link"),
    ([_file("a"), _link("b", tarfile.LNKTYPE, "a")], "member 'b' is a hard link"),
    ([_link("dev", tarfile.CHRTYPE, "")], "member 'dev' is a special file"),
    ([_link("fifo", tarfile.FIFOTYPE, "")], "member 'fifo' is a special file"),
    ([_file("manifest.json"), _file("manifest.json", b"y")], "member 'manifest.json' appears twice"),
    ([_file("a"), _file("./a")], "member 'a' appears twice"),
    ([_file("a"), _file("a/b")], "member 'a' is a file but 'a/b' needs it to be a directory"),
])
def test_evil_archives_are_refused(tmp_path, members, message):
    archive = _evil_tar(tmp_path / "evil.tar", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match="^evil.tar: ") as e:
        unpack(archive, dest)
    assert message in str(e.value)
    assert list(dest.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.tar"]
    with pytest.raises(BundleError):
        Bundle.open(archive)


def test_truncated_archive(bundle, tmp_path):
    archive = pack(bundle, tmp_path / "m.tar")
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        weights = tar.getmember("weights/model.safetensors")
    (tmp_path / "cut.tar").write_bytes(data[: weights.offset_data + 10])  # inside a member's data
    with pytest.raises(BundleError, match="^cut.tar: not a readable bundle archive"):
        Bundle.open(tmp_path / "cut.tar")
    (tmp_path / "cut.tar").write_bytes(data[: weights.offset])  # between members: the rest is missing
    with pytest.raises(BundleError, match="weights/model.safetensors is listed in the manifest but not in the archive"):
        Bundle.open(tmp_path / "cut.tar")


def test_cli_pack(bundle, tmp_path):
    result = CliRunner().invoke(pack_command, [str(bundle), "-o", str(tmp_path / "m.tar")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {tmp_path / 'm.tar'} (")
    assert verify_bundle(tmp_path / "m.tar").ok
