"""A 2-process DDP fit with Lightning's own launcher: ``python ddp_fit.py STORE OUT``.

Lightning starts the second process by running this script again (``strategy="ddp"``);
each rank writes the windows it trained on to ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import earthstream as es
from earthstream.lightning import StreamDataModule
from tests.lightning._model import Recorder, trainer


def main(store: Path, out: Path) -> None:
    stream = es.Stream(
        store, {"lat": 8, "lon": 8}, variables="t2m", batch_size=8, seed=3, shuffle="full"
    )
    dm = StreamDataModule(stream)
    model = Recorder()
    fit = trainer(max_epochs=2, devices=2, strategy="ddp", num_sanity_val_steps=0)
    fit.fit(model, dm)
    record = {
        "rank": fit.global_rank,
        "world_size": fit.world_size,
        "placement": list(stream.placement()),
        "seen": model.seen,
    }
    (out / f"rank{fit.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
