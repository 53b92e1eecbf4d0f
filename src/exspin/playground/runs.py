"""Read a run folder for the browser: EX per stage, the opponent's labelled answers, the pairs, and which
questions flipped between two stages. Read-only: nothing here writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from exspin.artifacts import read_jsonl
from exspin.errors import UserError
from exspin.evaluation.stats import paired_change
from exspin.records import LABELS, Generation, Pair

_STAGE = re.compile(r"^\d\d_(.+)$")
SETS = {"eval": "evaluation", "validation": "validation (from train)"}


class RunFolder:
    """A run folder as `exspin run` leaves it, finished or not."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        if not (self.path / "config.json").is_file():
            raise UserError(f"not a run folder (no config.json): {self.path}")
        self.config = json.loads((self.path / "config.json").read_text())

    @property
    def name(self) -> str:
        return self.path.name

    def stages(self) -> list[str]:
        """Finished stages that scored a model, in order: folder names such as 03_sft."""
        return [f.name for f in sorted(self.path.iterdir())
                if _STAGE.match(f.name) and (f / "done.json").is_file() and (f / "eval_eval").is_dir()]

    def iterations(self) -> list[str]:
        """Stages with the opponent's labelled answers (self-play iterations)."""
        return [s for s in self.stages() if (self.path / s / "generations.jsonl").is_file()]

    def summary(self, stage: str) -> dict:
        return json.loads((self.path / stage / "done.json").read_text())

    def models(self) -> dict[str, str]:
        """Stage -> the model it scored (its own, or the one it handed on), for side-by-side asks."""
        models = {}
        for stage in self.stages():
            model = self.summary(stage).get("model")
            if model:
                models[stage] = self._local(model)
        return models

    def _local(self, model: str) -> str:
        """A model path as this run folder holds it: runs record paths relative to where they ran."""
        parts = Path(model).parts
        if len(parts) >= 2 and parts[-1] == "model" and (self.path / parts[-2] / "model").is_dir():
            return str(self.path / parts[-2] / "model")
        return model

    def ex_table(self) -> list[dict]:
        """One row per (stage, set): EX in percent."""
        rows = []
        for stage in self.stages():
            summary = self.summary(stage)
            for key, label in (("validation_ex", SETS["validation"]), ("eval_ex", SETS["eval"])):
                if key in summary:
                    rows.append({"stage": stage, "set": label, "EX": round(float(summary[key]), 2)})
        return rows

    def decision(self) -> str:
        """Which stage the run kept and why it stopped; 'in progress' before it finished."""
        metrics = self.path / "report" / "metrics.json"
        if not metrics.is_file():
            return f"in progress: {len(self.stages())} stages scored so far"
        summary = json.loads(metrics.read_text())
        return f"kept **{summary['best']}** ({summary['final_model']}); stopped: {summary['stop_reason']}"

    def _questions(self, which: str) -> dict[int, dict]:
        path = self.path / "00_data" / f"{which}.jsonl"
        return {r["index"]: r for r in read_jsonl(path)} if path.is_file() else {}

    def generations(self, stage: str, label: str | None = None, db_id: str | None = None) -> list[dict]:
        """The opponent's answers to the training questions, with their feedback labels."""
        questions = self._questions("train")
        rows = []
        for answer in map(Generation.model_validate, read_jsonl(self._file(stage, "generations.jsonl"))):
            if (label and answer.label != label) or (db_id and answer.db_id != db_id):
                continue
            question = questions.get(answer.index, {})
            rows.append({"index": answer.index, "db_id": answer.db_id, "question": question.get("question", ""),
                         "label": answer.label, "sql": answer.sql, "gold": question.get("gold_sql", ""),
                         "message": answer.message})
        return rows

    def pairs(self, stage: str) -> list[dict]:
        """The pairs the stage trained on: gold (or a correct sample) over the opponent's answer."""
        questions = self._questions("train")
        path = self._file(stage, "train_pairs.jsonl", "pairs.jsonl")
        return [{"index": p.index, "db_id": p.db_id, "question": questions.get(p.index, {}).get("question", ""),
                 "chosen": p.chosen, "rejected": p.rejected, "rejected_label": p.rejected_label,
                 "chosen_source": p.chosen_source, "weight": p.weight}
                for p in map(Pair.model_validate, read_jsonl(path))]

    def flips(self, before: str, after: str, which: str = "eval") -> tuple[dict, list[dict]]:
        """The paired change from one stage to another on one set, and each flipped question."""
        verdicts = [json.loads((self.path / s / f"eval_{which}" / "results.json").read_text())["examples"]
                    for s in (before, after)]
        change = paired_change(*verdicts)
        by_index = [{e["index"]: e for e in v} for v in verdicts]
        rows = []
        for direction, indices in (("turned right", change["gained_indices"]), ("turned wrong", change["lost_indices"])):
            for index in indices:
                was, now = by_index[0][index], by_index[1][index]
                rows.append({"index": index, "change": direction, "db_id": now["db_id"], "question": now["question"],
                             f"{before} SQL": was["pred"], f"{after} SQL": now["pred"], "outcome now": now["outcome"]})
        return change, rows

    def _file(self, stage: str, *names: str) -> Path:
        if stage not in self.stages():
            raise UserError(f"no finished stage {stage!r} in {self.path}")
        for name in names:
            if (self.path / stage / name).is_file():
                return self.path / stage / name
        raise UserError(f"{stage} has no {names[0]}")


__all__ = ["LABELS", "RunFolder"]
