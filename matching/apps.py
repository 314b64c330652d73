from django.apps import AppConfig


class MatchingConfig(AppConfig):
    name = "matching"
    verbose_name = "Matching"

    def ready(self) -> None:
        from catalog.deletion import derived_files_requested, index_purged
        from matching.index_registry import registry

        def drop_entries(sender: object, organisation_id: int, image_ids: list[int] | None = None,
                         organisation_deleted: bool = False, **kwargs: object) -> None:
            if organisation_deleted or image_ids is None:
                registry.drop_snapshot(organisation_id)
            else:
                registry.drop_ids(organisation_id, image_ids)

        def snapshot_files(sender: object, organisation_ids: list[int], **kwargs: object) -> list[dict[str, object]]:
            return [entry for pk in organisation_ids for entry in registry.snapshot_files(pk)]

        # A deleted picture must never match again: this process drops its entries and its organisation's
        # snapshots at commit; the other processes at their next check (the generation the delete bumped).
        index_purged.connect(drop_entries, dispatch_uid="matching.drop_snapshot_on_purge", weak=False)
        derived_files_requested.connect(snapshot_files, dispatch_uid="matching.snapshot_files_for_receipt",
                                        weak=False)
