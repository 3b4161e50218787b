"""The course's own evaluation, the oracle every score is checked against (tests and
benchmarks import it from here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from grader.grading.testdata.testsets import TestSet


class CourseDataset(Dataset):
    """The course's dataset items: image float32 (1, 96, 96) in [0, 1], keypoints (15, 2)."""

    def __init__(self, test_set: TestSet) -> None:
        self.images = test_set.images
        self.keypoints = test_set.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = torch.tensor(self.images[i] / 255, dtype=torch.float32).unsqueeze(0)
        return {"image": image, "keypoints": torch.tensor(self.keypoints[i], dtype=torch.float32)}


def evaluate_model(model, dataset, call_eval=True):  # the course's code, verbatim
    # ... but for `call_eval`: a torch.export program's module raises NotImplementedError on
    # .eval() (torch 2.13); it keeps the mode it was exported in.
    if call_eval:
        model.eval()
    criterion = torch.nn.MSELoss()
    dataloader = DataLoader(dataset, batch_size=1, shuffle=False)
    loss = 0
    for batch in dataloader:
        image, keypoints = batch["image"], batch["keypoints"]
        predicted_keypoints = model(image).view(-1, 15, 2)
        loss += criterion(torch.squeeze(keypoints), torch.squeeze(predicted_keypoints)).item()
    return 1.0 / (2 * (loss / len(dataloader)))


def is_program(path: Path) -> bool:
    """A torch.export archive (.pt2), by content."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/archive_format") for n in zf.namelist())


def load_scripted(path: Path, device: str = "cpu") -> torch.nn.Module:
    """What the course loads: torch.jit.load for TorchScript, and for a torch.export program
    `torch.export.load(f).module()`, as the students are told."""
    import warnings

    if is_program(path):
        return torch.export.load(str(path)).module().to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device)


def course_score(model_path: Path, test_set: TestSet) -> float:
    """The course's score for a model file, inside no_grad (the same numbers, faster)."""
    with torch.no_grad():
        return float(evaluate_model(
            load_scripted(model_path), CourseDataset(test_set),
            call_eval=not is_program(model_path),
        ))


def course_predictions(model_path: Path, test_set: TestSet) -> torch.Tensor:
    """What the course's loop feeds to MSELoss: the plain module, batch 1, (N, 15, 2)."""
    model = load_scripted(model_path)
    if not is_program(model_path):
        model.eval()
    outs = []
    with torch.no_grad():
        for batch in DataLoader(CourseDataset(test_set), batch_size=1, shuffle=False):
            outs.append(model(batch["image"]).view(-1, 15, 2))
    return torch.cat(outs)


def course_loop(path: Path, test_set: TestSet, device: str = "cpu") -> Callable[[], float]:
    """The course's evaluation of the model at `path`, as a timed callable returning its score.
    On the CPU, as the course runs it: evaluate_model verbatim (grad mode on, file loaded)."""
    if device == "cpu":
        return lambda: float(evaluate_model(
            load_scripted(path), CourseDataset(test_set), call_eval=not is_program(path)
        ))

    # The course's loop with the image moved to the device: the only change a GPU needs.
    def run() -> float:
        model = load_scripted(path, device)
        if not is_program(path):
            model.eval()
        criterion = torch.nn.MSELoss()
        loss = 0.0
        with torch.no_grad():
            for batch in DataLoader(CourseDataset(test_set), batch_size=1, shuffle=False):
                image = batch["image"].to(device)
                keypoints = batch["keypoints"].to(device)
                pred = model(image).view(-1, 15, 2)
                loss += criterion(torch.squeeze(keypoints), torch.squeeze(pred)).item()
        return 1.0 / (2 * (loss / len(test_set)))

    return run


def classification_course_score(model_path: Path, test_set: TestSet) -> float:
    """The plain batch-1 loop an image-classification course runs: uint8 / 255 as float32,
    channels first, one image at a time, `argmax` of the logits; accuracy in percent."""
    model = load_scripted(model_path).eval()
    correct = 0
    with torch.no_grad():
        for image, label in zip(test_set.images, test_set.labels, strict=True):
            # As torchvision's ToTensor() makes it: float32 in [0, 1], channels first, contiguous.
            x = torch.tensor(image / 255, dtype=torch.float32).permute(2, 0, 1).contiguous()
            x = x.unsqueeze(0)
            correct += int(model(x).argmax(dim=1).item() == int(label))
    return 100.0 * correct / len(test_set)
