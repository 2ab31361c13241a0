"""EleutherAI's lm-eval (`local-completions`) against `llmc serve` on the example model, offline.

The test writes two tasks and their data: a multiple-choice task (loglikelihood: `echo`, `logprobs: 1`,
`max_tokens: 1`) whose right choice is the Zen of Python's continuation of a line and whose wrong ones
end other lines, and a generate_until task asking for the rest of each line. The model learned the
Zen, so it should get every choice right and nearly every line exactly.
"""

import codecs
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmc.aot.build import BuildConfig, build
from serve_harness import free_port, wait_until_healthy

ZEN_CHECKPOINT = Path(__file__).parents[2] / "examples" / "zen-llama"
SPLIT_AT = 3  # words of a line given as context


def zen_lines() -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line]


def write_tasks(where: Path) -> None:
    lines = [line.split() for line in zen_lines() if len(line.split()) > SPLIT_AT + 1][:12]
    endings = [" ".join(words[SPLIT_AT:]) for words in lines]
    mc, gen = where / "zen_mc.jsonl", where / "zen_gen.jsonl"
    with mc.open("w") as f:
        for i, words in enumerate(lines):
            wrong = [endings[(i + k) % len(endings)] for k in (3, 5, 7)]
            choices = sorted({endings[i], *wrong} - {""})
            f.write(json.dumps({"context": " ".join(words[:SPLIT_AT]), "choices": choices,
                                "label": choices.index(endings[i])}) + "\n")
    with gen.open("w") as f:
        for words, ending in zip(lines, endings):
            f.write(json.dumps({"context": " ".join(words[:SPLIT_AT]), "target": ending}) + "\n")
    common = "dataset_path: json\ntest_split: test\ndoc_to_text: \"{{context}}\"\n"
    (where / "zen_mc.yaml").write_text(
        f"task: zen_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {mc}\noutput_type: multiple_choice\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n")
    (where / "zen_gen.yaml").write_text(
        f"task: zen_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {gen}\noutput_type: generate_until\n"
        "doc_to_target: \"{{target}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 24\n"
        "  temperature: 0\nmetric_list:\n  - metric: exact_match\n    regexes_to_ignore: [\"^\\\\s+\", \"\\\\s+$\"]\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`llmc serve` on a cpu bundle of the example model, in a process of its own."""
    bundle = tmp_path_factory.mktemp("lm_eval") / "zen.llmc"
    build(ZEN_CHECKPOINT, bundle, BuildConfig(target="cpu", dtype="float32", max_batch_size=8, max_seq_len=256,
                                              kv_block_size=16), use_cache=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "llmc.cli", "serve", str(bundle), "--port", str(port), "--device",
                                "cpu", "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_until_healthy(url, process)
        yield url, bundle
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_lm_eval_multiple_choice_and_generate_until(server, tmp_path):
    url, bundle = server
    write_tasks(tmp_path)
    model_args = (f"model=zen.llmc,base_url={url}/v1/completions,tokenizer_backend=huggingface,"
                  f"tokenizer={bundle / 'tokenizer'},num_concurrent=4,max_retries=1,tokenized_requests=True")
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf"), "OPENAI_API_KEY": "unused"}
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", model_args,
         "--tasks", "zen_mc", "zen_gen", "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **offline}, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    [scores] = list((tmp_path / "out").rglob("results_*.json"))
    report = json.loads(scores.read_text())
    results = report["results"]
    assert {task: n["effective"] for task, n in report["n-samples"].items()} == {"zen_mc": 12, "zen_gen": 12}
    assert results["zen_mc"]["acc,none"] == 1.0, results
    assert results["zen_gen"]["exact_match,none"] >= 0.9, results
