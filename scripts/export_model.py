"""Make the shipped model from a run folder: its model.npz in float16 as package data, and the model card beside it.

    python scripts/export_model.py runs/config-C            # writes minimtl/weights/bknet-c.npz and MODEL_CARD.md

float16 halves the file (3,953,130 weights: 7.9 MB) and is enough for
inference: the network computes in float32 after loading.  The script
checks that: it classifies the test split of every data set it finds under
``$MINIMTL_SHARED/data`` with the float32 weights and the float16 ones and
writes both accuracies, the majority-class baseline and how many
predictions differ into the card.  Beside the card, ``fixed_sample.json``
names a fixed sample that ``tests/test_shipped_model.py`` crops and
classifies again: ``SAMPLE`` test faces of each data set drawn at random (seed 0)
among those the detector found, with the shipped weights' predictions and accuracy on them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from minimtl import cli, serialization  # noqa: E402
from minimtl.data import GENKI4K, IMDBWIKI, UTKFace  # noqa: E402
from minimtl.metrics import confusion_matrix, majority_share  # noqa: E402
from minimtl.data import CLASS_NAMES  # noqa: E402
from minimtl.models import SHIPPED_MODEL  # noqa: E402
from minimtl.train import load_model, predict  # noqa: E402

SAMPLE = 100  # test faces per data set in the fixed sample (detector-found faces only: each is cropped alone, and a
# detector miss would be cropped at the data set's median face position, which one photo alone does not give)
SAMPLE_FILE = "fixed_sample.json"
ARCHIVES = {"GENKI-4K": (GENKI4K, "genki4k.tar"), "IMDB-WIKI (wiki)": (IMDBWIKI, "wiki_crop_64.tar.gz"),
            "UTKFace": (UTKFace, "UTKFace.tar.gz")}


def test_splits(shared: Path) -> list:
    """The test split of each data set found in ``shared/data``, framed as in training (from the crop cache)."""
    splits = []
    for _name, (cls, archive) in ARCHIVES.items():
        if (shared / "data" / archive).is_file():
            splits.append(cls(shared / "data" / archive, progress=False).default_split(seed=0)[1])
    return splits


def accuracies(model, config, split) -> dict[str, dict]:
    probabilities = predict(model, split.images, flip=config.test_flip)
    return {task: probabilities[task].argmax(1) for task in config.tasks if task in split.labels}


def main(argv=None) -> None:
    parser = cli.ArgumentParser(prog="scripts/export_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder of examples/train_mtl.py")
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL, help=f"default {SHIPPED_MODEL}")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("MINIMTL_SHARED", REPOSITORY.parent / "shared")))
    parser.add_argument("--commit", default=None, help="the commit the run was trained at (default: this checkout's)")
    parser.add_argument("--command", default="python examples/train_mtl.py",
                        help="the command that trained the run, for the card")
    arguments = parser.parse_args(argv)
    if not (arguments.run_dir / "model.npz").is_file():
        raise cli.UsageError(f"{arguments.run_dir} holds no model.npz: give a finished run folder of train_mtl.py")
    if arguments.out.suffix != ".npz" or arguments.out.is_dir():
        raise cli.UsageError(f"--out {arguments.out}: give a file name ending in .npz")
    model, config = load_model(arguments.run_dir / "model.npz")
    state = {name: value.astype(np.float16) if value.dtype == np.float32 else value
             for name, value in model.state_dict().items()}
    state["__config__"] = np.array(config.to_json())
    serialization.save(state, arguments.out)
    half, _ = load_model(arguments.out)

    command = f"Its training configuration (minimtl.train.TrainConfig): `{config.to_json()}`"
    commit = arguments.commit or subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
    rows, sample_rows, confusions, failures, sample = [], [], [], [], {}
    for split in test_splits(arguments.shared):
        full, reduced = accuracies(model, config, split), accuracies(half, config, split)
        missed = {name for name, _ in split.fallbacks}
        found = [i for i, name in enumerate(split.names) if name not in missed]
        chosen = sorted(np.random.default_rng(0).choice(found, min(SAMPLE, len(found)), replace=False).tolist())
        sample[split.name] = {"archive": ARCHIVES[split.name][1], "names": split.names[chosen].tolist(),
                              "predicted": {}, "accuracy": {}}
        for task, predicted in full.items():
            truth = split.labels[task]
            differ = int(np.sum(predicted != reduced[task]))
            rows.append(f"| {split.name} | {task} | {len(truth)} | {100 * np.mean(predicted == truth):.2f}% | "
                        f"{100 * np.mean(reduced[task] == truth):.2f}% | {differ} | {100 * majority_share(truth):.2f}% |")
            correct = float(np.mean(reduced[task][chosen] == truth[chosen]))
            sample[split.name]["predicted"][task] = reduced[task][chosen].tolist()
            sample[split.name]["accuracy"][task] = correct
            sample_rows.append(f"| {split.name} | {task} | {len(chosen)} | {100 * correct:.2f}% |")
            matrix = confusion_matrix(reduced[task], truth, len(CLASS_NAMES[task]))
            names = CLASS_NAMES[task]
            confusions += [f"**{split.name}, {task}** (rows: true class, columns: predicted)", "",
                           "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            confusions += [f"| {names[i]} | " + " | ".join(str(v) for v in matrix[i]) + " |" for i in range(len(names))]
            confusions.append("")
            recall = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
            worst = int(np.argmin(recall))
            mistaken = int(np.argmax(np.where(np.arange(len(names)) == worst, -1, matrix[worst])))
            failures.append(f"- {split.name}, {task}: the class recognised least often is *{names[worst]}* "
                            f"({100 * recall[worst]:.1f}% of its {matrix[worst].sum()} faces), most often taken for "
                            f"*{names[mistaken]}* ({matrix[worst, mistaken]} faces).")
    card = [
        "# Model card: minimtl's shipped BKNet Config C",
        "",
        f"`{arguments.out.name}`: Config C of Rohani et al. (2023), smile, gender and six age groups from one 48×48 "
        "grayscale face, weights in float16 (the network computes in float32). `examples/predict.py` uses it when no "
        "`--weights` is given. Made by `python scripts/export_model.py RUN_DIR` from the run below.",
        "",
        "## How it was trained",
        "",
        f"- The run: `{arguments.command}` at commit {commit}; its run folder was `{arguments.run_dir.name}`.",
        f"- {command}",
        "- Data: smile from GENKI-4K (MPLab, UCSD: cite \"http://mplab.ucsd.edu, The MPLab GENKI-4K Dataset.\"), "
        "gender and age from 30,494 faces of IMDB-WIKI's WIKI part (Rothe et al., 2016; academic research use "
        "only), folders 00-79. **The training images are licensed for research use only, so these weights are "
        "for research use too.**",
        "- Faces framed by `minimtl.faces.FaceCropper` (MTCNN, landmarks on one template, 48×48 gray). Faces "
        "framed another way (another detector's box, a tight chip) are outside what it learned.",
        "",
        "## Accuracy on each data set's test split, beside always answering the majority class",
        "",
        "GENKI-4K: the paper's 1000 test images. WIKI: the people of folders 80-89, never seen in training. "
        "UTKFace: never trained on, a collection the model did not see at all.",
        "",
        "| data set | task | test faces | float32 | float16 (shipped) | predictions that differ | majority class |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"## Fixed sample checked by the tests ({SAMPLE_FILE}: {SAMPLE} test faces of each data set drawn at "
        "random among those the detector found)",
        "",
        "| data set | task | faces | accuracy |",
        "|---|---|---:|---:|",
        *sample_rows,
        "",
        "## Known failure modes",
        "",
        "Read from the confusion matrices below (the shipped weights on each test split):",
        "",
        *failures,
        "- Children (0-15) are 267 of WIKI's 30,494 training faces: the model has seen few.",
        "- A face the detector does not find is not classified at all.",
        "",
        "## Confusion matrices of the shipped weights",
        "",
        *confusions,
    ]
    arguments.out.with_name(SAMPLE_FILE).write_text(json.dumps(sample, indent=1) + "\n")
    card_path = arguments.out.with_name("MODEL_CARD.md")
    card_path.write_text("\n".join(card) + "\n")
    print(f"{arguments.out} ({arguments.out.stat().st_size / 1e6:.1f} MB) and {card_path}")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="scripts/export_model.py"))
