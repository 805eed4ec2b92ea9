"""Projects: what is labeled (modality), how (task) and with which classes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.store import utcnow

MODALITIES = ("image", "text", "tabular")
TASKS = ("single-label", "multi-label", "regression")
# A regression project's answer is a number (tables only): its queue ranks by the
# disagreement of a committee of trees, since there are no class probabilities.
REGRESSION_STRATEGIES = ("uncertainty", "random")


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    modality: str
    task: str
    classes: list[str]
    instructions: str
    created_at: str
    annotations_per_item: int = 1
    strategy: str = "margin"
    refit_every: int = 20

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label"

    @property
    def regression(self) -> bool:
        """Answers are numbers (a quantity per table row), not classes."""
        return self.task == "regression"


def _from_row(row: dict) -> Project:
    return Project(
        id=row["id"],
        name=row["name"],
        modality=row["modality"],
        task=row["task"],
        classes=json.loads(row["classes"]),
        instructions=row["instructions"],
        created_at=row["created_at"],
        annotations_per_item=int(row.get("annotations_per_item") or 1),
        strategy=row.get("strategy") or "margin",
        refit_every=int(row["refit_every"]) if row.get("refit_every") is not None else 20,
    )


def require_classes(project: Project, what: str) -> None:
    """Refuse a class-based feature on a regression project, saying what does work there."""
    if project.regression:
        raise GroundworkError(
            f"{what} works on class labels and their probabilities; project {project.name!r} "
            "is a regression project (its labels are numbers): train it, predict with it and "
            "label rows with numbers instead")


def clean_classes(classes: list[str]) -> list[str]:
    """Strip, drop blanks and duplicates, keep the user's order."""
    seen: list[str] = []
    for name in classes:
        name = str(name).strip()
        if name and name not in seen:
            seen.append(name)
    return seen


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise GroundworkError("project name is empty: give the project a name")
    if len(name) > 100:
        raise GroundworkError("project name is longer than 100 characters: choose a shorter one")
    return name


def create_project(
    db: sqlite_utils.Database,
    name: str,
    modality: str,
    task: str = "single-label",
    classes: list[str] | None = None,
    instructions: str = "",
) -> Project:
    name = validate_name(name)
    if modality not in MODALITIES:
        raise GroundworkError(
            f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}"
        )
    if task not in TASKS:
        raise GroundworkError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if task == "regression":
        if modality != "tabular":
            raise GroundworkError(
                f"regression (a number per item) is for tabular projects, not {modality}: "
                "use --task single-label or multi-label for classes")
        if clean_classes(classes or []):
            raise GroundworkError("a regression project has no classes (its labels are "
                                  "numbers): leave out --classes")
    if find_project(db, name) is not None:
        raise GroundworkError(f"a project named {name!r} exists already: pick another name")
    row = {
        "name": name,
        "modality": modality,
        "task": task,
        "classes": json.dumps(clean_classes(classes or [])),
        "instructions": instructions or "",
        "created_at": utcnow(),
    }
    if task == "regression":
        row["strategy"] = "uncertainty"
    with db.atomic():
        pk = db["projects"].insert(row).last_pk
    return get_project(db, pk)


def find_project(db: sqlite_utils.Database, name_or_id: str | int) -> Project | None:
    if isinstance(name_or_id, int):
        rows = db.query("SELECT * FROM projects WHERE id = ?", [name_or_id])
    else:
        rows = db.query("SELECT * FROM projects WHERE name = ?", [str(name_or_id)])
    row = next(iter(rows), None)
    return _from_row(row) if row else None


def get_project(db: sqlite_utils.Database, name_or_id: str | int) -> Project:
    project = find_project(db, name_or_id)
    if project is None:
        names = [p.name for p in list_projects(db)]
        known = ", ".join(names) if names else "none yet"
        raise GroundworkError(
            f"no project named {name_or_id!r} (projects: {known}); create one with "
            "`groundwork import`"
        )
    return project


def list_projects(db: sqlite_utils.Database) -> list[Project]:
    return [_from_row(r) for r in db.query("SELECT * FROM projects ORDER BY id")]


def set_classes(db: sqlite_utils.Database, project: Project, classes: list[str]) -> Project:
    """Classes can be added, never silently dropped: labels already given must stay valid."""
    new = clean_classes(classes)
    if project.regression and new:
        raise GroundworkError(f"project {project.name!r} is a regression project: its labels "
                              "are numbers, it has no classes")
    missing = [c for c in project.classes if c not in new]
    if missing:
        raise GroundworkError(
            f"cannot remove classes {', '.join(missing)} from project {project.name!r}: "
            "labels may already use them"
        )
    with db.atomic():
        db["projects"].update(project.id, {"classes": json.dumps(new)})
    return get_project(db, project.id)


def set_annotations_per_item(db: sqlite_utils.Database, project: Project, k: int) -> Project:
    """How many people should answer each item (1-5); their answers are consolidated."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 5:
        raise GroundworkError(f"annotations per item must be a whole number from 1 to 5, not {k!r}")
    with db.atomic():
        db["projects"].update(project.id, {"annotations_per_item": k})
    return get_project(db, project.id)


def set_strategy(db: sqlite_utils.Database, project: Project, strategy: str) -> Project:
    """Which query strategy orders the project's queue (takes effect at the next refit)."""
    from labeling.strategies import STRATEGIES

    if strategy not in STRATEGIES:
        raise GroundworkError(
            f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if project.regression and strategy not in REGRESSION_STRATEGIES:
        raise GroundworkError(
            f"strategy {strategy!r} needs class probabilities; a regression project can use "
            f"{' or '.join(REGRESSION_STRATEGIES)} (uncertainty: the spread of a committee of "
            "trees' predictions)")
    with db.atomic():
        db["projects"].update(project.id, {"strategy": strategy})
    return get_project(db, project.id)


def set_refit_every(db: sqlite_utils.Database, project: Project, n: int) -> Project:
    """Refit the quick queue model after every `n` new labels; 0 turns automatic refits off."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100_000:
        raise GroundworkError(
            f"refit interval must be a whole number of labels from 0 (off) to 100000, not {n!r}")
    with db.atomic():
        db["projects"].update(project.id, {"refit_every": n})
    return get_project(db, project.id)


# Instructions are drawn on every run of the Label page: a book-length text is a mistake
# (a wrong file), not guidance anyone reads before each item.
MAX_INSTRUCTIONS_CHARS = 100_000


def set_instructions(db: sqlite_utils.Database, project: Project, text: str | None) -> Project:
    """What annotators read above each item (Markdown; pages never render its HTML).

    Stored as given (only trailing whitespace trimmed) so the Markdown a
    person wrote is the Markdown shown; empty clears them.
    """
    text = (text or "").rstrip()
    if len(text) > MAX_INSTRUCTIONS_CHARS:
        raise GroundworkError(
            f"instructions are {len(text):,} characters, more than {MAX_INSTRUCTIONS_CHARS:,}: "
            "keep them to what an annotator reads before labeling (link to longer guides)")
    with db.atomic():
        db["projects"].update(project.id, {"instructions": text})
    return get_project(db, project.id)


def read_instructions_file(path: str | Path) -> str:
    """Instructions from a Markdown file, refused whole (with why) if it cannot be read as text.

    Read before anything is changed, so `groundwork import --instructions-file`
    with a wrong path fails before the import lands.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GroundworkError(f"instructions file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise GroundworkError(f"instructions file {str(path)!r} is a folder, not a file"
                              ) from None
    except OSError as exc:
        raise GroundworkError(f"cannot read instructions file {str(path)!r}: "
                              f"{exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GroundworkError(
            f"instructions file {path.name!r} is not UTF-8 text (byte {exc.start}): save it as "
            "UTF-8") from None
    if len(text) > MAX_INSTRUCTIONS_CHARS:
        raise GroundworkError(
            f"instructions file {path.name!r} holds {len(text):,} characters, more than "
            f"{MAX_INSTRUCTIONS_CHARS:,}: keep them to what an annotator reads before labeling")
    return text


def project_counts(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    """Counts shown on the Projects page and in `--json` output."""
    row = db.execute(
        """
        SELECT count(*), sum(n_labels > 0), sum(gold IS NOT NULL)
        FROM items WHERE project_id = ?
        """,
        [project.id],
    ).fetchone()
    return {"items": row[0] or 0, "labeled": row[1] or 0, "with_gold": row[2] or 0}
