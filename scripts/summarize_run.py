"""Summarises overlord_pull output: observed against configured mixture,
padding fraction and delivered tokens per second."""

import argparse
import json
import sys

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="job YAML file")
    parser.add_argument("--seconds", type=float, required=True,
                        help="wall time of the pull, for tokens/s")
    parser.add_argument("records", nargs="+",
                        help="overlord_pull output files, one per rank")
    args = parser.parse_args()

    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    weights = {source["name"]: float(source.get("weight", 1))
               for source in config["sources"]}
    weight_total = sum(weights.values())
    unit = config.get("mix_by", "tokens")

    tokens = padding = batches = 0
    source_tokens = {name: 0 for name in weights}
    source_documents = {name: 0 for name in weights}
    for path in args.records:
        with open(path) as handle:
            for line in handle:
                record = json.loads(line)
                batches += 1
                tokens += record["tokens"]
                padding += record["padding"]
                for name, count in record["source_tokens"].items():
                    source_tokens[name] += count
                for name, count in record["sources"].items():
                    source_documents[name] += count

    if batches == 0:
        print("summary: no batches received", file=sys.stderr)
        return 1
    observed = source_tokens if unit == "tokens" else source_documents
    observed_total = sum(observed.values()) or 1

    print()
    print(f"summary: {batches} batches from {len(args.records)} ranks "
          f"in {args.seconds:.1f} s")
    print(f"  mixture by {unit}:   configured   observed   documents")
    for name in weights:
        print(f"    {name:<14} {weights[name] / weight_total:>10.3f} "
              f"{observed[name] / observed_total:>10.3f} "
              f"{source_documents[name]:>11}")
    print(f"  padding fraction: {padding / (tokens + padding):.4f}")
    print(f"  delivered tokens/s: {tokens / args.seconds:,.0f} "
          f"({tokens:,} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
