"""The model reference the service loads: the local BentoML store only, with a clear message when missing."""

from __future__ import annotations

import os

import attrs
import bentoml


@attrs.frozen
class LocalModel(bentoml.models.BentoModel):
    """A model reference that must be in the local store: no BentoCloud lookup, a clear message when missing.

    Without it, `bentoml serve` before `serving.package` ends with BentoML's
    "failed to fetch from remote because No cloud context default found".
    """

    def _require_stored(self) -> None:
        if self.stored is None:
            home = os.environ.get("BENTOML_HOME", "~/bentoml")
            raise bentoml.exceptions.NotFound(
                f"model {self.tag} is not in the local BentoML store ({home}): run python -m serving.package "
                "ARTIFACT first (ARTIFACT = the output folder of python -m training.train), or set FIC_MODEL "
                "to a tag listed by bentoml models list"
            )

    def to_info(self, alias: str | None = None):  # noqa: ANN201 - BentoML's type
        self._require_stored()
        return super().to_info(alias)

    def resolve(self, base_path=None):  # noqa: ANN001, ANN201 - BentoML's types
        self._require_stored()
        return super().resolve(base_path)
