"""The pretraining data (Sec. 2.1): readers for the public sources (`sources/`), filter stages
(`filters/`), recipe runs that write JSONL.zst document shards with a report (`recipe`, `pipeline`,
`report`), and the Table 1 mixture (`mixture`)."""
