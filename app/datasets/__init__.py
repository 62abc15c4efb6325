"""Dataset snapshots: export rows (pairs, kto, rankings, sft) and immutable, content-hashed snapshot files."""
