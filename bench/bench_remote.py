"""P9: a build reading its corpus from object storage against downloading the same objects first and building
from disk, both from one local S3 server (moto's, over HTTP on this machine).

    python bench/bench_remote.py [--copies 4] [--repeats 3] [--tokens | --ray-nodes N]

The corpus is the demo's JSONL files ×--copies, uploaded uncompressed (--tokens: the same documents tokenized once,
as uint16 token files: no tokenization in the build, so the reads are all there is). "remote": `injc build` of a
plan whose paths are s3:// URLs. "download + local": s3fs `get` of every object into a temporary folder, then
`injc build` of the same plan with local paths. Both in this process, alternating; medians of --repeats; the
input-hash cache is fresh for every build (a first build: each object's sha256 is computed too, while the build
streams it where it reads it whole).

--ray-nodes N: instead, the JSONL corpus built from the store with `--executor ray` on a Ray cluster of a head (no
CPUs: it drives and writes) and N worker nodes of one CPU each (`ray.cluster_utils.Cluster`, all on this machine),
against the local build from the store (the tokenizer's own threads), alternating.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
PLAN = """[layout]
seq_len = 256
batch_size = 16
steps = {steps}
seed = 1

[tokenizer]
path = "{demo}/tokenizer.json"

[corpus]
paths = ["{paths}"]
{options}
"""


def token_file(jsonl: bytes) -> bytes:
    """The demo tokenizer's ids of every document of a JSONL file, EOS after each, as little-endian uint16."""
    import json

    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    texts = [json.loads(line)["text"] for line in jsonl.splitlines() if line.strip()]
    ids = [part for encoded in tokenizer.encode_batch_fast(texts, add_special_tokens=False)
           for part in (encoded.ids, [eos])]
    return np.concatenate(ids).astype("<u2").tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-nodes", type=int, default=0, help="Ray cluster of a head and N worker nodes")
    parser.add_argument("--tokens", action="store_true",
                        help="A token corpus (format = \"tokens\", uint16): the demo corpus tokenized once, ×--copies")
    args = parser.parse_args()
    import s3fs

    import injc
    from injc import storage

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        time.sleep(2)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("corpus")
        size, suffix = 0, "bin" if args.tokens else "jsonl"
        for copy in range(args.copies):
            for path in sorted(DEMO.glob("data/*.jsonl.zst")):
                data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
                if args.tokens:
                    data = token_file(data)
                fs.pipe_file(f"corpus/{copy}-{path.name.removesuffix('.jsonl.zst')}.{suffix}", data)
                size += len(data)
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            steps = 200 * args.copies
            kind = 'format = "tokens"\ndtype = "uint16"\n' if args.tokens else ""
            options = kind + f'storage_options = {{ endpoint_url = "{endpoint}" }}'
            (root / "remote.toml").write_text(PLAN.format(steps=steps, demo=DEMO, paths=f"s3://corpus/*.{suffix}",
                                                          options=options))
            (root / "local.toml").write_text(PLAN.format(steps=steps, demo=DEMO,
                                                         paths=f"{root}/download/*.{suffix}", options=kind))

            def remote() -> float:
                os.environ["INJC_CACHE_DIR"] = tempfile.mkdtemp(dir=root)
                storage._streamed.clear()  # as in a fresh process: no object's sha256 known from an earlier build
                started = time.perf_counter()
                injc.build(root / "remote.toml", root / "out-remote", force=True, progress=False)
                return time.perf_counter() - started

            def download_then_local() -> float:
                os.environ["INJC_CACHE_DIR"] = tempfile.mkdtemp(dir=root)
                started = time.perf_counter()
                fs.get("corpus/", str(root / "download") + "/", recursive=True)
                injc.build(root / "local.toml", root / "out-local", force=True, progress=False)
                elapsed = time.perf_counter() - started
                subprocess.run(["rm", "-rf", str(root / "download")], check=True)
                return elapsed

            if args.ray_nodes:
                return cluster_against_local(root, args, size)
            pairs = [(remote(), download_then_local()) for _ in range(args.repeats)]
            same = all((root / "out-remote" / p.relative_to(root / "out-local")).read_bytes() == p.read_bytes()
                       for p in (root / "out-local" / "shards").rglob("*.bin"))
    finally:
        server.terminate()
        server.wait()
    ours, theirs = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    ratio = statistics.median(b / a for a, b in pairs)
    tokens = steps * 16 * 256
    what = "uint16 tokens" if args.tokens else "JSONL"
    print(f"P9 corpus of {size / 2**20:.0f} MiB {what} from a local S3 server, {tokens:,} tokens built: remote "
          f"{ours:.1f} s, download + local {theirs:.1f} s (medians of {args.repeats}); (download + local) / remote "
          f"= {ratio:.2f}× (target ≥ 0.9×); shards identical: {same}")


def cluster_against_local(root: Path, args, size: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    import injc
    from injc.compiler.options import BuildOptions
    from injc.compiler.workers import RayExecutor

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(args.ray_nodes):
        nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    try:
        def build(executor) -> float:
            os.environ["INJC_CACHE_DIR"] = tempfile.mkdtemp(dir=root)
            started = time.perf_counter()
            out = root / ("out-cluster" if executor else "out-local")
            injc.build(root / "remote.toml", out, BuildOptions(force=True, progress=False, workers=executor))
            return time.perf_counter() - started

        executor = RayExecutor(nodes.address)
        build(executor)  # Ray's workers start and import injc once, as in a long-lived cluster
        pairs = [(build(executor), build(None)) for _ in range(args.repeats)]
        same = all((root / "out-cluster" / p.relative_to(root / "out-local")).read_bytes() == p.read_bytes()
                   for p in (root / "out-local" / "shards").rglob("*.bin"))
    finally:
        ray.shutdown()
        nodes.shutdown()
    cluster, local = (statistics.median(p[i] for p in pairs) for i in (0, 1))
    print(f"Ray cluster (head + {args.ray_nodes} one-CPU worker nodes on this machine) building {size / 2**20:.0f} MiB "
          f"of JSONL from a local S3 server: {cluster:.1f} s; the local build from the store: {local:.1f} s (medians "
          f"of {args.repeats}); local / cluster = {statistics.median(b / a for a, b in pairs):.2f}×; shards "
          f"identical: {same}")


if __name__ == "__main__":
    main()
