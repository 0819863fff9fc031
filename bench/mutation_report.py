"""The kill rate of the last `mutmut run` (bench/mutation.sh), per module, over the mutants that are not equivalent.

A surviving mutant is equivalent when it cannot change any result: each rule below names such a change and why.
Every other survivor is listed with its diff line: it needs a test (or a new rule, with its reason). Prints the
figures docs/evaluation.md quotes; exit 1 when the kill rate is under --min (default 0.9).

    python bench/mutation_report.py [--min 0.9]
"""

import argparse
import re
import subprocess
import sys
from collections import Counter

EQUIVALENT = [
    (r'float\("NAN"\)', "float('NAN') is the same NaN as float('nan')"),
    (r"np\.asarray\([\w.]+, (None)?\)", "the inputs are numbers: means, sums, sorts and comparisons give the same "
                                        "values with or without the float dtype"),
    (r"(diffs|pairs|flipped\)?) > observed", "observed carries a 1e-12 tolerance: > and >= differ only at exactly "
                                            "observed − 1e-12"),
    (r"max\(2, 4_000_000|4000001 //|2 << 16|1 << 17", "a chunk size: how many patterns are drawn at once, not which"),
    (r"patterns, reaching, bits = 2 << pairs", "each sign pattern is counted twice: the same share"),
    (r"dtype=None\)|\(1 << 16\), patterns\), \)", "np.arange of Python ints is int64 already"),
    (r"searchsorted\(\w+, thresholds, \)", "searchsorted's default side is 'left'"),
    (r"if \(len\(a\) and len\(b\)\) or True|if len\(a\) or len\(b\)|if \(len\([ab]\)\) or True",
     "numpy's mean of an empty sample is already NaN, the value the branch returns"),
    (r"if len\(a\) < 2 and len\(b\) < 2", "a one-value sample's variance (ddof=1) is NaN, so d is NaN either way"),
    (r"comparison = compare\(losses\[rows\], control, (\(.*\))?\)",
     "forgetting reads only the difference and its interval from this comparison; the labels name its means"),
    (r"ctx\.items\.get\(name, (None)?\)", "None and [] are both falsy: no items either way"),
    (r"stride: int, start: int = 1\)", "start is rounded down to its row: 0 and 1 are the same row"),
    (r'records\.get\("canary", ("XXrandomXX"|"RANDOM"|None)?\)',
     "only 'none' turns the order control off: any other default keeps it on, as 'random' does"),
    (r"ctx\.scorer\.text_losses\(texts\)\)\) if \(texts\) or True", "scoring no texts gives no losses: the same {}"),
    (r"np\.array\(hits, (None)?\)", "hits are booleans: the mean of booleans is their share, as of the floats"),
    (r"previous = np\.zeros\(len\(candidate\) \+ 1, \)", "LCS lengths are small integers, exact in float64 too"),
    (r"\(p > threshold\)\.astype\(None\)|\.any\(1\)\.astype\(None\)",
     "astype(None) is float64, the same as astype(float)"),
    (r"for p, q in zip\(references, encoded\)\], \)",
     "the greedy leak flags are booleans; each use casts them (compare() to float, the report to bool)"),
    (r"std\)\.to\(None\)", "the noise stays on the CPU it is made on; on CPU, where the tests run, the gradient is "
                             "there too (on CUDA the mutant fails with a device mismatch rather than a wrong number)"),
    (r"if normal_cdf\(z\) > 0\.05", "p is exactly 0.05 only at one z to the last bit: the hint's >= and > agree"),
    (r"reshape\(-2, seq_len\)", "numpy takes any negative size as the unknown one"),
]


def mutmut(*args: str) -> str:
    return subprocess.run(["mutmut", *args], capture_output=True, text=True).stdout


def changed_line(name: str) -> str:
    """The mutant's changed source line (its `+` line), or the whole diff when it has none. mutmut's own diff,
    called in this process (`mutmut show` is a second a call; the extra pins mutmut 3.8.1, whose API this is)."""
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=find_mutant(name).path)
    lines = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return lines[0] if lines else diff.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=0.9, help="lowest acceptable kill rate of non-equivalent mutants")
    args = parser.parse_args()
    statuses = re.findall(r"^\s*(injc\.\S+): (\w[\w ]*)$", mutmut("results", "--all", "true"), re.M)
    totals, killed, equivalent, open_ = Counter(), Counter(), Counter(), []
    for name, status in statuses:
        module = re.split(r"\.x_|\.xǁ", name)[0]  # a function's mutants (x_f), or a method's (xǁClassǁf)
        totals[module] += 1
        if status == "killed":
            killed[module] += 1
            continue
        line = changed_line(name)
        reason = next((why for pattern, why in EQUIVALENT if re.search(pattern, line)), None)
        if reason is not None and status == "survived":
            equivalent[module] += 1
        else:
            open_.append((name, status, line))
    print(f"{'module':<34} {'mutants':>8} {'killed':>7} {'equivalent':>11} {'kill rate':>10}")
    rates = []
    for module in sorted(totals):
        counted = totals[module] - equivalent[module]
        rate = killed[module] / counted if counted else 1.0
        rates.append(rate)
        print(f"{module:<34} {totals[module]:>8} {killed[module]:>7} {equivalent[module]:>11} {rate:>10.1%}")
    every = sum(totals.values()) - sum(equivalent.values())
    overall = sum(killed.values()) / every if every else 1.0
    print(f"{'all':<34} {sum(totals.values()):>8} {sum(killed.values()):>7} {sum(equivalent.values()):>11} "
          f"{overall:>10.1%}")
    for name, status, line in open_:
        print(f"  {status}: {name}: {line}")
    return 0 if overall >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
