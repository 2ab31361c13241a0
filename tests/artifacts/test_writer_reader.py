import json

import pytest
from bundle_samples import KERNEL_ID, MANIFEST_FIELDS, PLAN, WEIGHTS, fresh, safetensors_bytes, write_bundle
from click.testing import CliRunner

from llmc.artifacts import FORMAT_VERSION, Bundle, BundleWriter, check_output_path, dumps, loads, verify_bundle
from llmc.cli.verify import verify
from llmc.errors import BundleError, LlmcError, UserError


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "b.llmc"
    write_bundle(out)
    return out


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_bytes())
    manifest.update(changes)
    (path / "manifest.json").write_bytes(dumps(manifest))


def test_round_trip(bundle):
    with Bundle.open(bundle) as b:
        assert b.manifest["format_version"] == FORMAT_VERSION == 2
        assert sorted(b.manifest["files"]) == sorted([
            "impls.lock.json", "kernels/index.json", f"kernels/{KERNEL_ID}.cubin", "plans/decode_b2.json",
            "plans/prefill_t16.json", "tokenizer/tokenizer_config.json", "weights/model.safetensors"])
        assert b.plans() == ["decode_b2", "prefill_t16"]
        assert b.plan("decode_b2") == PLAN
        assert b.lock()["nodes"]["decode_b2/norm"]["provider"] == "triton"
        assert b.kernel_index()["kernels"][KERNEL_ID]["name"] == "rms_norm_kernel"
        assert b.file("weights/model.safetensors").read_bytes() == WEIGHTS
    for path in bundle.rglob("*.json"):  # every JSON file is canonical
        assert path.read_bytes() == dumps(loads(path.read_bytes(), path.name))


def test_bundles_are_reproducible_and_carry_no_path(tmp_path):
    a, b = tmp_path / "one" / "a.llmc", tmp_path / "two" / "b.llmc"
    write_bundle(a), write_bundle(b)
    for path in a.rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
            assert str(tmp_path).encode() not in path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["a.llmc"]  # no staging left behind


def test_tampered_byte_fails_full_not_fast(bundle):
    weights = bundle / "weights/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"X")
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle)
    assert str(e.value) == (f"{bundle}: weights/model.safetensors: sha256 does not match the manifest; the bundle "
                            "was modified or corrupted: rebuild it or copy it again")
    Bundle.open(bundle, verify="fast").close()


def test_fast_catches_size_change(bundle):
    (bundle / "weights/model.safetensors").write_bytes(b"W" * 99)
    with pytest.raises(BundleError, match=f"weights/model.safetensors: 99 bytes, the manifest says {len(WEIGHTS)}"):
        Bundle.open(bundle, verify="fast")


@pytest.mark.parametrize("version, message", [
    (3, "bundle format 3 is newer than this llmc (reads 2): upgrade llmc"),
    (1, "bundle format 1 is older than this llmc reads (2): its root digest does not cover the manifest; rebuild"),
    ("1", "field 'format_version' must be an integer"),
    (None, "field 'format_version' must be an integer"),
])
def test_format_version_refused(bundle, version, message):
    _edit_manifest(bundle, format_version=version)
    with pytest.raises(BundleError, match="^" + str(bundle)) as e:
        Bundle.open(bundle, verify="none")
    assert message in str(e.value)


def test_extra_and_missing_files(bundle):
    (bundle / "notes.txt").write_text("hi")
    with pytest.raises(BundleError, match="notes.txt: not listed in the manifest"):
        Bundle.open(bundle, verify="fast")
    (bundle / "notes.txt").unlink()
    (bundle / "impls.lock.json").unlink()
    with pytest.raises(BundleError, match="impls.lock.json: listed in the manifest but missing"):
        Bundle.open(bundle, verify="fast")


def test_verify_bundle_lists_every_mismatch(bundle):
    (bundle / "notes.txt").write_text("hi")
    (bundle / "impls.lock.json").unlink()
    (bundle / "plans/decode_b2.json").write_bytes(b"{}\n")
    weights = bundle / "weights/model.safetensors"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])
    report = verify_bundle(bundle)
    assert not report.ok
    assert [(m.kind, m.file) for m in report.mismatches] == [
        ("missing", "impls.lock.json"), ("extra", "notes.txt"), ("size", "plans/decode_b2.json"),
        ("sha256", "weights/model.safetensors")]
    assert [m.kind for m in verify_bundle(bundle, full=False).mismatches] == ["missing", "extra", "size"]


def test_edited_manifest_breaks_root_digest(bundle):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest["files"]["weights/model.safetensors"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_bytes(dumps(manifest))
    report = verify_bundle(bundle)
    assert [m.kind for m in report.mismatches] == ["root_digest", "sha256"]
    assert "manifest.json: root_digest does not match the manifest" in report.mismatches[0].message


@pytest.mark.parametrize("content, message", [
    (b'{"format_version": 1,', "manifest.json: invalid JSON"),
    (b'[]', "manifest.json: must be a JSON object"),
    (b'{"format_version": 2}', "manifest.json: field 'llmc_version' is missing"),
])
def test_bad_manifest(bundle, content, message):
    (bundle / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle, verify="none")
    assert message in str(e.value) and str(e.value).endswith("rebuild it with llmc build")


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        Bundle.open(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.open(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"not a tar")
    with pytest.raises(BundleError, match="is a file but not a bundle archive"):
        Bundle.open(tmp_path / "x.bin")


def test_bad_parts_are_named(bundle):
    with Bundle.open(bundle, verify="none") as b:
        with pytest.raises(BundleError, match="has no plan 'decode_b64'; it has decode_b2"):
            b.plan("decode_b64")
        with pytest.raises(BundleError, match="has no file selftest.json"):
            b.read_json("selftest.json")
    plan = fresh(PLAN)
    plan["steps"][1]["launches"][0]["kernel"] = "f" * 64
    (bundle / "plans/decode_b2.json").write_bytes(dumps(plan))
    with Bundle.open(bundle, verify="none") as b:
        with pytest.raises(BundleError, match=r"field 'steps\[1\].launches\[0\].kernel' names a kernel that"):
            b.plan("decode_b2")
    (bundle / "plans/decode_b2.json").write_bytes(dumps({**PLAN, "arena_bytes": "big"}))
    with Bundle.open(bundle, verify="none") as b:
        with pytest.raises(BundleError, match="plans/decode_b2.json: field 'arena_bytes' must be a non-negative"):
            b.plan("decode_b2")


def test_cpu_bundle_has_empty_kernel_index(tmp_path):
    with BundleWriter(tmp_path / "cpu.llmc") as w:
        w.write_json("impls.lock.json", {"nodes": {}})
        w.commit({**fresh(MANIFEST_FIELDS), "target": {"name": "cpu", "backend": "cpu", "arch": None, "warp_size": 1}})
    with Bundle.open(tmp_path / "cpu.llmc", verify="none") as b:
        assert b.kernel_index() == {"kernels": {}} and b.plans() == []


# ---- the writer -------------------------------------------------------------------------------

def test_writer_refuses_non_bundle_output(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="data: exists and is not an llmc bundle"):
        BundleWriter(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file: exists and is not a directory"):
        check_output_path(tmp_path / "file")
    with pytest.raises(UserError, match="b.llmc: cannot write there"):
        BundleWriter(tmp_path / "file" / "b.llmc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file"]
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"


def test_writer_uses_empty_dir_and_replaces_old_bundle(tmp_path):
    out = tmp_path / "b.llmc"
    out.mkdir()
    write_bundle(out)
    other = safetensors_bytes({"embed_tokens.weight": ("F32", [128, 64]), "norm.weight": ("F32", [64])})
    write_bundle(out, weights=other, extra={"selftest.json": b"{}\n"})
    with Bundle.open(out) as b:
        assert b.file("weights/model.safetensors").read_bytes() == other and "selftest.json" in b.manifest["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.llmc"]


def test_failure_writes_nothing(tmp_path):
    out = tmp_path / "b.llmc"
    with pytest.raises(RuntimeError):
        with BundleWriter(out) as w:
            w.write_bytes("weights/model.safetensors", b"123")
            raise RuntimeError("compiler crashed")
    with pytest.raises(BundleError, match="field 'model' is missing"):
        with BundleWriter(out) as w:
            w.write_bytes("weights/model.safetensors", b"123")
            w.commit({k: v for k, v in MANIFEST_FIELDS.items() if k != "model"})
    assert list(tmp_path.iterdir()) == []
    write_bundle(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BundleError):
        with BundleWriter(out) as w:
            w.commit({})
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # old bundle untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.llmc"]


def test_writer_refuses_bad_names(tmp_path):
    with BundleWriter(tmp_path / "b.llmc") as w:
        for bad in ("../x", "/abs", "manifest.json", "a//b"):
            with pytest.raises(LlmcError, match="not a valid bundle file name"):
                w.write_bytes(bad, b"")
        w.write_bytes("x", b"")
        with pytest.raises(LlmcError, match="x is written twice"):
            w.write_bytes("x", b"")


# ---- llmc verify ------------------------------------------------------------------------------

def test_cli_verify(bundle):
    result = CliRunner().invoke(verify, [str(bundle)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert result.output.splitlines()[0] == f"OK: {manifest['root_digest']}"
    assert "sm90: the cuda runtime on NVIDIA GPUs of that architecture (compute capability 9.0)" in result.output
    (bundle / "extra.bin").write_bytes(b"")
    (bundle / "impls.lock.json").write_bytes(b"{}\n")
    result = CliRunner().invoke(verify, [str(bundle)])
    assert result.exit_code == 1
    assert "2 mismatch(es)" in result.output and "extra.bin: not listed" in result.output
    assert "impls.lock.json: 3 bytes, the manifest says" in result.output
    assert CliRunner().invoke(verify, [str(bundle), "--fast"]).exit_code == 1


def test_cli_verify_bad_manifest_raises_user_error(bundle):
    _edit_manifest(bundle, format_version=3)
    result = CliRunner().invoke(verify, [str(bundle)])
    assert isinstance(result.exception, BundleError) and "upgrade llmc" in str(result.exception)
