"""`python -m trainer.hf_dataset OUT SPLIT=ARROW:FINGERPRINT ...`: turn Arrow stream files into a Hugging Face
`datasets.DatasetDict.save_to_disk` directory at OUT.

The app writes each split of a snapshot as an Arrow stream and runs this in a child process, so neither the
web process nor the worker imports HF `datasets`. The fingerprint makes the output's bytes depend on the data
only (the default one mixes in the file path).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or any("=" not in item or ":" not in item for item in argv[1:]):
        print("usage: python -m trainer.hf_dataset OUT SPLIT=ARROW_FILE:FINGERPRINT ...", file=sys.stderr)
        return 2
    import datasets

    datasets.disable_progress_bars()
    splits = {}
    for item in argv[1:]:
        split, _, rest = item.partition("=")
        arrow_path, _, fingerprint = rest.rpartition(":")
        dataset = datasets.Dataset.from_file(arrow_path, in_memory=False)
        splits[split] = dataset.select_columns(dataset.column_names, new_fingerprint=fingerprint)
    # An empty split (a snapshot with no test rows) gets one empty shard: by default `datasets` saves no data file
    # for it, and load_from_disk then fails on the whole directory (IndexError).
    empty = {split: 1 for split, dataset in splits.items() if dataset.num_rows == 0}
    datasets.DatasetDict(splits).save_to_disk(argv[0], num_shards=empty or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
