from django.apps import AppConfig


class MatchingConfig(AppConfig):
    name = "matching"
    verbose_name = "Matching"

    def ready(self) -> None:
        from catalog.deletion import index_purged
        from matching.index_registry import registry

        def drop_snapshot(sender: object, organisation_id: int, **kwargs: object) -> None:
            registry.drop_snapshot(organisation_id)

        # A deleted picture must never match again: its organisation's snapshots go at once.
        index_purged.connect(drop_snapshot, dispatch_uid="matching.drop_snapshot_on_purge", weak=False)
