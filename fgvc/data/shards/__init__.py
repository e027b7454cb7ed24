"""Datasets as litdata shards: ``fgvc data shard`` writes them (:mod:`.write`),
:class:`~fgvc.data.shards.datamodule.ShardDataModule` (``fgvc.data.ShardDataModule``) reads
them from a folder or an object-store URL (:mod:`.read` for random access, :mod:`.stream`
for the training stream). :mod:`.meta` describes the layout."""
