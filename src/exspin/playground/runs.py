"""Tables of a run folder for the browser: EX per stage, the opponent's labelled answers, the pairs, and which
questions flipped between two stages. Read-only, through the library's RunFolder."""

from __future__ import annotations

from exspin.evaluation.stats import paired_change
from exspin.records import LABELS
from exspin.run_folder import SCORED, RunFolder

SET_NAMES = {"eval": "evaluation", "validation": "validation (from train)"}


class RunTables(RunFolder):
    """A run folder (finished or not) as rows for data frames; stages by their report names (sft, exspin-1)."""

    def stages(self) -> list[str]:
        """Finished stages that scored a model, in order."""
        return [s for s in self.stage_names() if self.scored_dir(s, "eval").is_dir()]

    def iterations(self) -> list[str]:
        """Stages with the opponent's labelled answers (self-play iterations)."""
        return [s for s in self.stages() if (self.stage_dir(s) / "generations.jsonl").is_file()]

    def models(self) -> dict[str, str]:
        """Stage -> the model it scored (its own, or the one it handed on), for side-by-side asks."""
        return {stage: self.model(stage) for stage in self.stages()}

    def ex_table(self) -> list[dict]:
        """One row per (stage, set): EX in percent."""
        rows = []
        for stage in self.stages():
            summary = self.summary(stage)
            for which in SCORED:
                rows.append({"stage": stage, "set": SET_NAMES[which], "EX": round(getattr(summary, f"{which}_ex"), 2)})
        return rows

    def decision(self) -> str:
        """Which stage the run kept and why it stopped; 'in progress' before it finished."""
        summary = self.metrics()
        if summary is None:
            return f"in progress: {len(self.stages())} stages scored so far"
        return f"kept **{summary.best}** ({summary.final_model}); stopped: {summary.stop_reason}"

    def generation_rows(self, stage: str, label: str | None = None, db_id: str | None = None) -> list[dict]:
        """The opponent's answers to the training questions, with their feedback labels."""
        questions = {e.index: e for e in self.examples("train")}
        rows = []
        for answer in self.generations(stage):
            if (label and answer.label != label) or (db_id and answer.db_id != db_id):
                continue
            question = questions.get(answer.index)
            rows.append({"index": answer.index, "db_id": answer.db_id, "question": question.question if question else "",
                         "label": answer.label, "sql": answer.sql, "gold": question.gold_sql if question else "",
                         "message": answer.message})
        return rows

    def pair_rows(self, stage: str) -> list[dict]:
        """The pairs the stage trained on: gold (or a correct sample) over the opponent's answer."""
        questions = {e.index: e.question for e in self.examples("train")}
        return [{"index": p.index, "db_id": p.db_id, "question": questions.get(p.index, ""),
                 "chosen": p.chosen, "rejected": p.rejected, "rejected_label": p.rejected_label,
                 "chosen_source": p.chosen_source, "weight": p.weight}
                for p in self.pairs(stage)]

    def flips(self, before: str, after: str, which: str = "eval") -> tuple[dict, list[dict]]:
        """The paired change from one stage to another on one set, and each flipped question."""
        was, now = self.verdicts(before, which), self.verdicts(after, which)
        change = paired_change(was, now)
        was_by, now_by = {v.index: v for v in was}, {v.index: v for v in now}
        rows = []
        for direction, indices in (("turned right", change.gained_indices), ("turned wrong", change.lost_indices)):
            for index in indices:
                rows.append({"index": index, "change": direction, "db_id": now_by[index].db_id,
                             "question": now_by[index].question, f"{before} SQL": was_by[index].pred,
                             f"{after} SQL": now_by[index].pred, "outcome now": now_by[index].outcome})
        return change.to_json(), rows


__all__ = ["LABELS", "RunTables"]
