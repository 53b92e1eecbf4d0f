"""The SPIN loss (formula, gradient, and trl's trainer), the NLL guard, feedback labels and pairs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exspin.data import load_split
from exspin.execution.pool import SqlRunner
from exspin.feedback import PairRules, count_labels, label_samples, make_pairs
from exspin.records import Pair
from exspin.sqltext import normal_form
from exspin.training.launch import free_port


def spin_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """The SPIN loss as the paper writes it, per pair: y the gold SQL, y' the opponent's, p_t the frozen
    previous iterate. It is DPO's sigmoid loss with the previous iterate as reference; trl's DPOTrainer
    computes it in training, and these tests check that trainer against this formula:

    loss = -log sigmoid(lambda * [(log p(y|x) - log p_t(y|x)) - (log p(y'|x) - log p_t(y'|x))])"""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin)


def nll_term(chosen_token_logps, chosen_mask):
    """Mean negative log-likelihood per gold token (masked): trl's "sft" loss, RPO's term."""
    return -(chosen_token_logps[chosen_mask.bool()]).mean()


POLICY_CHOSEN = torch.tensor([-12.0, -30.5, -7.25, -50.0])
POLICY_REJECTED = torch.tensor([-15.0, -20.0, -9.0, -49.0])
REFERENCE_CHOSEN = torch.tensor([-13.0, -31.0, -7.0, -52.0])
REFERENCE_REJECTED = torch.tensor([-14.0, -21.5, -9.5, -45.0])


def test_spin_loss_equals_the_formula_and_its_gradient():
    beta = 0.1
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    policy_rejected = POLICY_REJECTED.clone().requires_grad_(True)
    loss = spin_loss(policy_chosen, policy_rejected, REFERENCE_CHOSEN, REFERENCE_REJECTED, beta)
    margin = (POLICY_CHOSEN - REFERENCE_CHOSEN) - (POLICY_REJECTED - REFERENCE_REJECTED)
    direct = -torch.log(1 / (1 + torch.exp(-beta * margin)))
    assert torch.allclose(loss, direct, atol=1e-6)
    loss.sum().backward()
    # d/d(chosen) of -log sigmoid(beta m) = -beta * sigmoid(-beta m); the rejected side is its negative.
    expected = -beta * torch.sigmoid(-beta * margin)
    assert torch.allclose(policy_chosen.grad, expected, atol=1e-6)
    assert torch.allclose(policy_rejected.grad, -expected, atol=1e-6)


def test_nll_term_gradient_is_minus_one_over_gold_tokens():
    token_logps = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.1, -0.2, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    loss = nll_term(token_logps, mask)
    assert loss.item() == pytest.approx((2.0 + 0.5 + 3.0 + 0.1 + 0.2) / 5)
    loss.backward()
    assert torch.allclose(token_logps.grad, -mask.float() / 5)


def _on_device(batch: dict, device) -> dict:
    """A collated batch on the model's device, where the Trainer would put it (these tests call the loss directly)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _completion_logp(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([full_ids], device=model.device)
    logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1 :].sum()


def test_trl_trainer_computes_the_spin_loss(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from exspin.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype=torch.float32)
    pairs = [{"prompt": "<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": "SELECT count(*) FROM singer", "rejected": "SELECT name FROM stadium"},
             {"prompt": "<|im_start|>user\nOldest singer?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": "SELECT name FROM singer ORDER BY age DESC LIMIT 1", "rejected": "SELECT max(age) FROM t"}]
    beta = 0.25
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=["sigmoid"], per_device_train_batch_size=2,
                     report_to=[], bf16=False, max_length=256)
    # As train_selfplay does: a new adapter on the opponent, so the reference is the adapter switched off.
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    policy = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # a policy that differs from its reference
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    batch = _on_device(next(iter(trainer.get_train_dataloader())), policy.device)
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        logps = {}
        for side in ("chosen", "rejected"):
            logps[("policy", side)] = torch.stack([_completion_logp(policy, tokenizer, p["prompt"], p[side])
                                                   for p in pairs])
            with policy.disable_adapter():
                logps[("reference", side)] = torch.stack([_completion_logp(policy, tokenizer, p["prompt"], p[side])
                                                          for p in pairs])
    expected = spin_loss(logps[("policy", "chosen")], logps[("policy", "rejected")],
                         logps[("reference", "chosen")], logps[("reference", "rejected")], beta).mean()
    assert abs(expected.item() - 0.6931) > 1e-3  # the check is not trivially log 2
    assert trl_loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.fixture(scope="module")
def concert(spider_dir):
    split = load_split(spider_dir, "dev")
    return split, [e for e in split.examples if e.db_id == "concert_singer"][:2]


def test_feedback_labels_and_pairs(concert):
    split, (first, second) = concert
    assert first.gold_sql == "SELECT count(*) FROM singer"
    samples = [
        ["```sql\nSELECT COUNT(*) FROM singer\n```", "SELECT count(*) FROM stadium", "SELECT nope FROM singer",
         "SELECT name FROM singer WHERE", "I do not know.", "SELECT count(singer_id) FROM singer",
         "select   count(*) from stadium"],
        ["SELECT count(*) FROM singer", "SELECT count(*)   FROM singer"],
    ]
    with SqlRunner(workers=1) as runner:
        labelled = label_samples(split, [first, second], samples, runner)
    assert [r.label for r in labelled] == ["correct", "wrong_result", "runtime_error", "syntax_error",
                                              "syntax_error", "correct", "wrong_result", "correct", "correct"]
    assert count_labels(labelled)["correct"] == 4
    prompts = {first.index: "P0", second.index: "P1"}
    exspin = make_pairs("exspin", [first, second], prompts, labelled)
    # Both sides in normal form; "select   count(*) from stadium" is the same answer as the second sample.
    assert [(p.index, p.rejected) for p in exspin] == [
        (first.index, "SELECT COUNT(*) FROM stadium"), (first.index, "SELECT nope FROM singer"),
        (first.index, "SELECT name FROM singer WHERE"), (first.index, "I do not know.")]
    assert all(p.chosen == "SELECT COUNT(*) FROM singer" and p.prompt == "P0" for p in exspin)
    spin = make_pairs("spin", [first, second], prompts, labelled)
    # SPIN also pushes down a correct answer written differently; never one whose normal form is the gold's.
    assert "SELECT COUNT(singer_id) FROM singer" in [p.rejected for p in spin]
    assert len(spin) == len(exspin) + 1
    assert not any(p.index == second.index for p in spin)
    dpo = make_pairs("dpo", [first, second], prompts, labelled)
    assert dpo == [Pair(index=first.index, db_id="concert_singer", prompt="P0",
                        chosen="SELECT COUNT(*) FROM singer", rejected="SELECT COUNT(*) FROM stadium",
                        rejected_label="wrong_result", chosen_source="sample", weight=1)]
    for pair in exspin + spin + dpo:
        assert normal_form(pair.chosen) != normal_form(pair.rejected)


def test_pair_rules_beyond_the_paper(concert):
    split, (first, _) = concert
    samples = [["SELECT count(*) FROM stadium", "SELECT nope FROM singer", "SELECT count(singer_id) FROM singer",
                "SELECT name FROM singer WHERE"]]
    with SqlRunner(workers=1) as runner:
        labelled = label_samples(split, [first], samples, runner, logprobs=[[-9.0, -2.0, -1.0, -5.0]])
    assert [(r.label, r.logprob) for r in labelled] == [
        ("wrong_result", -9.0), ("runtime_error", -2.0), ("correct", -1.0), ("syntax_error", -5.0)]
    prompts = {first.index: "P0"}

    def pairs(method="exspin", **rules):
        return [(p.chosen_source, p.rejected_label, p.weight)
                for p in make_pairs(method, [first], prompts, labelled, PairRules(**rules))]

    assert pairs() == [("gold", "wrong_result", 1), ("gold", "runtime_error", 1), ("gold", "syntax_error", 1)]
    # Graded negatives: syntax errors left out, wrong results weighed twice.
    assert pairs(negatives={"syntax_error": 0, "wrong_result": 2}) == [("gold", "wrong_result", 2),
                                                                      ("gold", "runtime_error", 1)]
    # The correct sample in another normal form is a second chosen answer, against the same wrong ones.
    positives = make_pairs("exspin", [first], prompts, labelled, PairRules(equivalent_positives=True))
    assert [p.chosen for p in positives if p.chosen_source == "sample"] == ["SELECT COUNT(singer_id) FROM singer"] * 3
    assert len(positives) == 6
    # SPIN would push the same correct sample down against the gold.
    with pytest.raises(ValueError, match="ExSPIN rule"):
        make_pairs("spin", [first], prompts, labelled, PairRules(equivalent_positives=True))
    # Own chosen: the correct sample replaces the gold as the chosen side; a question without one keeps the gold.
    own = make_pairs("exspin", [first], prompts, labelled, PairRules(own_chosen=True))
    assert [(p.chosen_source, p.chosen, p.rejected_label) for p in own] == [
        ("sample", "SELECT COUNT(singer_id) FROM singer", label)
        for label in ("wrong_result", "runtime_error", "syntax_error")]
    wrong_only = [r for r in labelled if r.label != "correct"]
    assert {p.chosen_source for p in make_pairs("exspin", [first], prompts, wrong_only,
                                                 PairRules(own_chosen=True))} == {"gold"}
    assert pairs(own_chosen=True, hardest_negative=True) == [("sample", "runtime_error", 1)]
    # The gold's own form is never rejected, even judged wrong (here a timeout), once the chosen is a sample.
    gold_timeout = labelled[0].model_copy(update={"sample": 5, "sql": first.gold_sql, "completion": first.gold_sql,
                                                  "label": "timeout", "logprob": -0.1})
    own = make_pairs("exspin", [first], prompts, [*labelled, gold_timeout],
                     PairRules(own_chosen=True, hardest_negative=True))
    assert [(p.chosen_source, p.rejected_label) for p in own] == [("sample", "runtime_error")]
    for method in ("exspin", "dpo"):  # the gold's form, the likeliest answer, never uses up the hardest negative
        hardest = make_pairs(method, [first], prompts, [*labelled, gold_timeout], PairRules(hardest_negative=True))
        assert [p.rejected_label for p in hardest] == ["runtime_error"], method
    with pytest.raises(ValueError, match="choose one"):
        make_pairs("exspin", [first], prompts, labelled, PairRules(own_chosen=True, equivalent_positives=True))
    # Hardest negative: of the wrong answers, the one the opponent rated most likely (-2.0).
    assert pairs(hardest_negative=True) == [("gold", "runtime_error", 1)]
    assert pairs("dpo", hardest_negative=True) == [("sample", "runtime_error", 1)]
    # ... among the outcomes kept.
    assert pairs(hardest_negative=True, negatives={"runtime_error": 0}) == [("gold", "syntax_error", 1)]
    # One answer sampled twice: its likelier sample speaks for it.
    again = [*labelled, labelled[3].model_copy(update={"sample": 4, "completion": "SELECT  name FROM singer WHERE",
                                                        "logprob": -0.5})]
    hardest = make_pairs("exspin", [first], prompts, again, PairRules(hardest_negative=True))
    assert [p.rejected_label for p in hardest] == ["syntax_error"]
    without = [r.model_copy(update={"logprob": None}) for r in labelled]
    with pytest.raises(ValueError, match="log-prob"):
        make_pairs("exspin", [first], prompts, without, PairRules(hardest_negative=True))


def test_pair_weight_repeats_the_pair_in_training(tiny_model_dir, tmp_path):
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    prompt = "<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n"
    pairs = [{"prompt": prompt, "chosen": "SELECT count(*) FROM singer", "rejected": "SELECT 1", "weight": 3},
             {"prompt": prompt, "chosen": "SELECT count(*) FROM singer", "rejected": "SELECT 2", "weight": 0},
             {"prompt": prompt, "chosen": "SELECT count(*) FROM singer", "rejected": "SELECT 3"}]
    settings = SelfPlaySettings(max_steps=1, precompute_reference=False,
                                lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), pairs, settings, tmp_path)
    eos = trainer.processing_class.eos_token  # trl appends it
    assert sorted(trainer.train_dataset["rejected"]) == [f"SELECT 1{eos}"] * 3 + [f"SELECT 3{eos}"]


def test_timeouts_are_labelled(concert):
    split, (first, _) = concert
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with SqlRunner(workers=1, timeout_s=0.2) as runner:
        [record] = label_samples(split, [first], [[slow]], runner)
    assert record.label == "timeout"


def test_generation_uses_the_kv_cache_after_a_training_step(tiny_model_dir, tmp_path):
    """Gradient checkpointing turns `use_cache` off in the saved config; generation must still decode
    one token per step from the cache. Counted in tokens the decoder sees, not wall time (CI is noisy)."""
    from exspin.generation import GenerationConfig
    from exspin.generation.hf import TransformersGenerator
    from exspin.models import load_model
    from exspin.training.sft import SFTSettings, train_sft

    records = [{"prompt": "<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"}] * 4
    # The dtype left to the hardware (models.default_dtype measures it), as the quickstart runs it.
    settings = SFTSettings(max_steps=1, batch_size=2, gradient_checkpointing=True,
                           lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trained = train_sft(str(tiny_model_dir), records, settings, tmp_path / "sft")
    assert json.loads((trained / "config.json").read_text()).get("use_cache", True) is True

    generator = TransformersGenerator(*load_model(str(trained), dtype=torch.float32))
    fed: list[int] = []  # input length of every decoder forward
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    prompt = "How many singers do we have?"
    config = GenerationConfig(max_new_tokens=24, batch_size=2, stop_at_statement_end=False)
    generator.generate([prompt, prompt + "?"], config)
    # Prefill (the shared prefix, then each prompt's own tail, when the prompts share one) reads the prompt
    # once; every decoding step after it reads one new token.
    assert 1 in fed, fed
    decoding = fed.index(1)
    longest = max(len(generator.tokenizer(p).input_ids) for p in (prompt, prompt + "?"))
    assert sum(fed[:decoding]) <= longest and len(fed) - decoding > 2, fed
    assert all(width == 1 for width in fed[decoding:]), fed  # no step re-reads the prompt


def _run_launch(command: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    """A multi-process launch in its own process group, killed whole if it overruns (so no worker is left
    holding the cores, the port or a build lock)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the launch ran past {timeout} s: {stderr[-3000:]}")
    except BaseException:  # an interrupt no longer reaches a new session's workers
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _two_step_sft_inputs(tmp_path, settings: str) -> tuple[Path, Path]:
    """8 records and a run config whose sft.train takes `settings` (YAML flow entries): 2 steps of LoRA."""
    records = tmp_path / "records.jsonl"
    rows = [{"prompt": f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n",
             "completion": "SELECT count(*) FROM singer"} for i in range(8)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(f"sft:\n  train: {{max_steps: 2, batch_size: 2, bf16: false, {settings},"
                      " lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}\n")
    return records, config


@pytest.mark.slow
@pytest.mark.xdist_group("two_processes")  # one 2-process launch at a time on 2 cores
def test_two_process_training_through_torchrun(tiny_model_dir, tmp_path):
    records, config = _two_step_sft_inputs(tmp_path, "gradient_checkpointing: false")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "exspin.cli", "train",
               "sft", "--model", str(tiny_model_dir), "--records", str(records), "--out", str(tmp_path / "out"),
               "--config", str(config)]
    result = _run_launch(command, env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").open()]
    # 2 processes x batch 2 x 2 steps = all 8 records: one epoch. One process would reach 0.5.
    assert log[-1]["epoch"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("two_processes")
def test_two_process_zero3_training_saves_and_merges_the_sharded_weights(tiny_model_dir, tmp_path):
    """DeepSpeed ZeRO-3 on 2 CPU processes (gloo), every parameter partitioned: the saved adapter and
    merged model are whole, and the merged model's logits equal a one-process merge of that adapter."""
    pytest.importorskip("deepspeed")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    records, config = _two_step_sft_inputs(
        tmp_path, "learning_rate: 0.01, checkpoint_over_tokens: null, save_every_steps: null")
    deepspeed = tmp_path / "deepspeed.json"  # threshold 0: even the tiny model's parameters are partitioned
    deepspeed.write_text(json.dumps({
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                              "stage3_gather_16bit_weights_on_model_save": True},
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}))
    accelerate = tmp_path / "accelerate.yaml"
    accelerate.write_text(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {deepspeed}\n"
                          "  zero3_init_flag: false\nnum_machines: 1\nnum_processes: 2\nuse_cpu: true\n")
    # Its own folder for DeepSpeed's JIT-built ops: a build killed elsewhere leaves a lock that hangs the next.
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate),
               "--main_process_port", str(free_port()), "-m", "exspin.cli", "train", "sft", "--model",
               str(tiny_model_dir), "--records", str(records), "--out", str(out), "--config", str(config)]
    result = _run_launch(command, env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert all(p.numel() > 0 for p in merged.parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected(ids).logits, atol=1e-5)
        unchanged = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        assert not torch.allclose(merged(ids).logits, unchanged(ids).logits, atol=1e-4)  # the adapter trained


def _one_step(trainer, n: int, metric: tuple[str, ...]):
    """One loss and backward on the first n examples, from LoRA weights that are random but the same
    in every trainer (so the policy differs from its reference): (loss, metrics, gradients, batch)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.3)
    batch = _on_device(trainer.data_collator([trainer.train_dataset[i] for i in range(n)]), trainer.model.device)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith(metric)}
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads, batch


def test_shared_prompt_forward_equals_trls_two_rows(tiny_model_dir, tmp_path, monkeypatch):
    """Log-probs, loss and LoRA gradients of the one-pass trainer equal trl's stock path (fp32)."""
    from exspin.training import forward
    from exspin.training.common import LoraSettings
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    packed_calls = []
    original = forward.scored_outputs
    monkeypatch.setattr(forward, "scored_outputs",
                        lambda model, packed, shape: packed_calls.append(packed) or original(model, packed, shape))

    schema = "<|im_start|>user\nCREATE TABLE singer (name TEXT, age INTEGER, country TEXT);\n"
    pairs = [{"prompt": schema + "How many singers are there in all?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": "SELECT count(*) FROM singer", "rejected": "SELECT name FROM stadium WHERE a = 1"},
             {"prompt": schema + "Oldest?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": "SELECT name FROM singer ORDER BY age DESC LIMIT 1", "rejected": "SELECT 1"},
             {"prompt": "<|im_start|>user\nList the stadiums.<|im_end|>\n<|im_start|>assistant\n",
              "chosen": "SELECT name FROM stadium", "rejected": "I do not know the answer to that."}]
    results = {}
    for shared in (False, True):
        settings = SelfPlaySettings(shared_prompt=shared, bf16=False, batch_size=3, max_length=256, beta=0.3,
                                    lora=LoraSettings(r=4, alpha=8, dropout=0.0), gradient_checkpointing=False)
        trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), pairs, settings, tmp_path / str(shared))
        loss, metrics, grads, batch = _one_step(trainer, len(pairs), ("logps", "rewards"))
        results[shared] = (loss, metrics, grads, batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    (stock_loss, stock_metrics, stock_grads, *stock_ref), (loss, metrics, grads, *ref) = results[False], results[True]
    assert len(packed_calls) == 2  # the shared path ran: reference log-probs once, then the loss
    assert packed_calls[-1].input_ids.shape[0] == 2  # 6 rows: the two pairs about singers share a row
    assert abs(stock_metrics["rewards/margins"]) > 1e-3  # the pairs are not trivially tied
    assert torch.allclose(loss, stock_loss, atol=1e-5)
    for a, b in zip(ref, stock_ref, strict=True):  # precomputed reference log-probs, both paths
        assert torch.allclose(a, b, atol=1e-5)
    for key, value in stock_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
    assert grads.keys() == stock_grads.keys() and len(grads) > 0
    for name, grad in stock_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-5), name


def test_pack_rows_layout_for_a_pair():
    from exspin.training.forward import pack_rows

    # trl's collated batch: prompt [1, 2, 3]; chosen [4, 5]; rejected [6]; right-padded with 0.
    input_ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]])
    completion_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]])
    packed = pack_rows(input_ids, completion_mask, pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 3, 6]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3]]
    assert packed.next_tokens.tolist() == [[-100, -100, 4, 5, -100, 6, -100]]
    assert packed.target_rows.tolist() == [0, 0, 1] and packed.target_columns.tolist() == [2, 3, 2]
    visible = packed.attention_mask[0, 0].int().tolist()
    assert visible[5] == [1, 1, 0, 0, 0, 1, 0]  # the rejected branch's copy of the last prompt token
    assert visible[6] == [1, 1, 0, 0, 0, 1, 1]  # never sees the chosen branch
    assert visible[4] == [1, 1, 1, 1, 1, 0, 0]
    # A row with nothing left to score (truncation cut its completion) falls back to trl's path.
    assert pack_rows(torch.tensor([[1, 2], [1, 2]]), torch.tensor([[0, 0], [0, 0]]), 0) is None


def test_pack_rows_shares_a_schema_prefix_and_keeps_unrelated_rows_apart():
    from exspin.training.forward import pack_rows

    # Rows 0 and 2 share the "schema" [7, 7, 7, 7] and differ in the question; row 1 shares nothing.
    input_ids = torch.tensor([[7, 7, 7, 7, 1, 8, 9, 0], [5, 6, 4, 3, 2, 8, 0, 0], [7, 7, 7, 7, 2, 3, 8, 9]])
    scored = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]])
    packed = pack_rows(input_ids, scored, pad_id=0)
    assert packed.input_ids.tolist() == [[7, 7, 7, 7, 1, 8, 9, 2, 3, 8, 9], [5, 6, 4, 3, 2, 8, 0, 0, 0, 0, 0]]
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7]
    assert packed.next_tokens[0].tolist() == [-100] * 5 + [9, -100, -100, 8, 9, -100]
    visible = packed.attention_mask[0, 0].int().tolist()
    assert visible[8] == [1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0]  # row 2's branch: the schema and itself
    # Scored tokens map back to trl's shifted layout: column t scores token t + 1 of its row.
    assert list(zip(packed.target_rows.tolist(), packed.target_columns.tolist(), strict=True)) == [
        (0, 5), (2, 5), (2, 6), (1, 4)]


def test_pack_rows_computes_a_pairs_question_once_below_the_shared_schema():
    from exspin.training.forward import pack_rows

    # Schema [7, 7, 7, 7]; a pair on question [1, 2] (chosen [8], rejected [9]); a row on question [3].
    input_ids = torch.tensor([[7, 7, 7, 7, 1, 2, 8], [7, 7, 7, 7, 1, 2, 9], [7, 7, 7, 7, 3, 5, 6]])
    scored = torch.tensor([[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1]])
    packed = pack_rows(input_ids, scored, pad_id=0)
    # schema | question [1] | tails [2, 8] and [2, 9] | question [3] | tail [5, 6]
    assert packed.input_ids.tolist() == [[7, 7, 7, 7, 1, 2, 8, 2, 9, 3, 5, 6]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 5, 6, 4, 5, 6]]
    visible = packed.attention_mask[0, 0].int().tolist()
    assert visible[8] == [1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]  # rejected: schema, its question, itself
    assert visible[11] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]  # the other question never sees the pair
    assert list(zip(packed.target_rows.tolist(), packed.target_columns.tolist(), strict=True)) == [
        (0, 5), (1, 5), (2, 5)]


def test_pack_rows_leaves_other_layouts_to_trl():
    from exspin.training.forward import pack_rows

    input_ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    assert pack_rows(input_ids, torch.ones(2, 3), 0) is None  # the first token has no position to score it
    left_padded = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pack_rows(input_ids, torch.tensor([[0, 0, 1], [0, 0, 1]]), 0, left_padded) is None
    assert pack_rows(input_ids, torch.tensor([[0, 0, 1], [0, 0, 1]]), 0, torch.ones(2, 3)) is not None


def test_examples_about_one_database_train_in_one_batch(tiny_model_dir, tmp_path):
    from exspin.training.common import LoraSettings, order_by_prompt
    from exspin.training.sft import SFTSettings, build_sft_trainer

    prompts = ["b schema | q1", "a schema | q1", "b schema | q2", "a schema | q2", "a schema | q3", "c | q1"]
    order = order_by_prompt(prompts, 2, seed=0)
    assert sorted(order) == list(range(len(prompts)))
    batches = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert sorted(sorted(prompts[i][0] for i in b) for b in batches) == [["a", "a"], ["a", "c"], ["b", "b"]]

    schemas = {"singer": "<|im_start|>user\nCREATE TABLE singer (name TEXT, age INTEGER, country TEXT);\n",
               "stadium": "<|im_start|>user\nCREATE TABLE stadium (name TEXT, capacity INTEGER, city TEXT);\n"}
    records = [{"prompt": schemas[db] + f"Question {i}?<|im_end|>\n<|im_start|>assistant\n",
                "completion": f"SELECT {i} FROM {db}"} for i, db in enumerate(["singer", "stadium"] * 4)]
    settings = SFTSettings(bf16=False, batch_size=4, max_length=256, lora=LoraSettings(r=4, alpha=8))
    trainer, tokenizer = build_sft_trainer(str(tiny_model_dir), records, settings, tmp_path)
    for batch in trainer.get_train_dataloader():  # what the trainer will see: one database per batch
        texts = tokenizer.batch_decode(batch["input_ids"])
        assert len({"singer" if "singer (" in t else "stadium" for t in texts}) == 1, texts


@pytest.mark.parametrize("batch_size", [1, 3])
def test_the_positions_counted_for_the_dry_run_are_those_sft_feeds_its_model(tiny_model_dir, tmp_path, batch_size):
    from exspin.training.common import LoraSettings, positions_fed
    from exspin.training.sft import SFTSettings, build_sft_trainer

    schemas = {"singer": "<|im_start|>user\nCREATE TABLE singer (name TEXT, age INTEGER, country TEXT);\n",
               "stadium": "<|im_start|>user\nCREATE TABLE stadium (name TEXT, capacity INTEGER, city TEXT);\n",
               "pets": "<|im_start|>user\nCREATE TABLE pets (id INTEGER, kind TEXT);\n"}
    # Uneven counts a database: some batches mix two, so packed rows are padded to the widest
    records = [{"prompt": schemas[db] + f"Question {i} about it{'?' * (i % 4)}<|im_end|>\n<|im_start|>assistant\n",
                "completion": f"SELECT {'name, ' * (i % 3)}{i} FROM {db}"}
               for i, db in enumerate(["singer"] * 4 + ["stadium"] * 3 + ["pets"] * 2)]
    settings = SFTSettings(bf16=False, batch_size=batch_size, max_length=256, epochs=1,
                           lora=LoraSettings(r=4, alpha=8), save_every_steps=None)
    trainer, tokenizer = build_sft_trainer(str(tiny_model_dir), records, settings, tmp_path)
    fed = []
    decoder = trainer.model.get_base_model().model
    decoder.register_forward_pre_hook(lambda _m, _a, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True)
    trainer.train()
    counted = positions_fed(tokenizer, [(r["prompt"], r["completion"]) for r in records], settings)
    # One at a time the trainer draws its own random order; packed, it keeps the grouped one
    assert (sorted(fed) == sorted(counted)) if batch_size == 1 else fed == counted


def test_batches_over_the_token_limit_recompute_activations_with_the_same_gradients(tiny_model_dir, tmp_path):
    from transformers.modeling_layers import GradientCheckpointingLayer

    from exspin.training.common import LoraSettings
    from exspin.training.sft import SFTSettings, build_sft_trainer

    records = [{"prompt": "<|im_start|>user\nHow many singers are there?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"},
               {"prompt": "<|im_start|>user\nList the stadiums.<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT name FROM stadium"}]
    results, switches = {}, {}
    for limit in (None, 8, 100_000):  # never; every batch here (over 8 tokens); none of them
        settings = SFTSettings(bf16=False, batch_size=2, max_length=256, checkpoint_over_tokens=limit,
                               lora=LoraSettings(r=4, alpha=8, dropout=0.0))
        trainer, _ = build_sft_trainer(str(tiny_model_dir), records, settings, tmp_path / str(limit))
        assert trainer.args.gradient_checkpointing is (limit is not None)
        if trainer.args.gradient_checkpointing:  # what Trainer.train() does first
            trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        results[limit] = _one_step(trainer, 2, ("entropy",))[:3]
        switches[limit] = {m.gradient_checkpointing for m in trainer.model.modules()
                           if isinstance(m, GradientCheckpointingLayer)}
    assert switches == {None: {False}, 8: {True}, 100_000: {False}}
    _assert_same_step(results[None], results[8])
    _assert_same_step(results[None], results[100_000])


def test_grouped_kv_attention_trains_as_sdpa(tiny_model_dir):
    """Loss and gradients through packed rows (a 4-D mask) agree between SDPA and the CPU attention."""
    from transformers import AutoModelForCausalLM

    from exspin.models import CPU_ATTENTION, cpu_attention
    from exspin.training.forward import pack_rows, scored_outputs

    cpu_attention()
    input_ids = torch.tensor([[7, 8, 9, 10, 11, 12, 13, 0], [7, 8, 9, 10, 14, 15, 16, 17]])
    scored = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1]])
    packed = pack_rows(input_ids, scored, 0)
    assert packed.input_ids.shape[0] == 1
    results = {}
    for attention in ("sdpa", CPU_ATTENTION):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32,
                                                     attn_implementation=attention)
        loss = scored_outputs(model, packed, (2, 7)).log_probs.sum()
        loss.backward()
        results[attention] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None})
    (loss, grads), (other_loss, other_grads) = results["sdpa"], results[CPU_ATTENTION]
    assert torch.allclose(loss, other_loss, atol=1e-5)
    assert grads.keys() == other_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, other_grads[name], atol=1e-5), name


def test_completion_head_sft_equals_trls_path(tiny_model_dir, tmp_path, monkeypatch):
    """SFT loss, token metrics and LoRA gradients with the head on completion positions only equal trl's (fp32)."""
    from exspin.training import forward
    from exspin.training.common import LoraSettings
    from exspin.training.sft import SFTSettings, build_sft_trainer

    calls = []
    for name in ("completion_outputs", "scored_outputs"):
        original = getattr(forward, name)
        monkeypatch.setattr(forward, name, lambda *a, _name=name, _original=original, **k:
                            calls.append(_name) or _original(*a, **k))

    schema = "<|im_start|>user\nCREATE TABLE singer (name TEXT, age INTEGER, country TEXT);\n"
    records = [{"prompt": schema + "How many singers are there?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"},
               {"prompt": schema + "Oldest?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT name FROM singer ORDER BY age DESC LIMIT 1"},
               {"prompt": "<|im_start|>user\nList the stadiums.<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT name FROM stadium"}]
    results = {}
    for fast in (False, True):
        for rows in (1, 3):  # one row alone (head only), then three: two share the schema
            settings = SFTSettings(completion_head_only=fast, bf16=False, batch_size=rows, max_length=256,
                                   lora=LoraSettings(r=4, alpha=8, dropout=0.0), gradient_checkpointing=False)
            trainer, _ = build_sft_trainer(str(tiny_model_dir), records, settings, tmp_path / f"{fast}{rows}")
            results[fast, rows] = _one_step(trainer, rows, ("entropy", "mean_token_accuracy"))[:3]
    assert calls == ["completion_outputs", "scored_outputs"]  # head only for one row; packed for three
    for rows in (1, 3):
        _assert_same_step(results[False, rows], results[True, rows])


def _assert_same_step(stock, fast):
    (stock_loss, stock_metrics, stock_grads), (loss, metrics, grads) = stock, fast
    assert torch.allclose(loss, stock_loss, atol=1e-5)
    assert metrics == pytest.approx(stock_metrics, abs=1e-5)
    assert grads.keys() == stock_grads.keys() and len(grads) > 0
    for name, grad in stock_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-5), name


def test_cached_rows_survive_a_save_cut_short(tmp_path):
    """A save cut short (a .saving folder, or a folder without its state) is saved again, never read back."""
    from datasets import Dataset

    from exspin.training.common import cached_on_disk

    rows = Dataset.from_list([{"prompt": "p", "chosen": "SELECT 1", "rejected": "SELECT 2"}] * 3)
    folder = tmp_path / "dataset"
    (tmp_path / "dataset.saving").mkdir()
    (tmp_path / "dataset.saving" / "junk.arrow").write_text("cut")
    folder.mkdir()
    (folder / "data-00000-of-00001.arrow").write_text("cut before its state was written")
    cached = cached_on_disk(rows, folder)
    assert list(cached["chosen"]) == ["SELECT 1"] * 3
    assert not (tmp_path / "dataset.saving").exists()
    saved = (folder / "state.json").stat().st_mtime_ns
    assert list(cached_on_disk(rows, folder)["prompt"]) == ["p"] * 3
    assert (folder / "state.json").stat().st_mtime_ns == saved  # read back as saved, not saved again


def test_a_resumed_selfplay_training_reuses_its_reference_log_probs(tiny_model_dir, tmp_path, monkeypatch):
    """The reference log-probs, computed before the first step, are cached in the trainer's folder: building
    the trainer again there (as a resume does, in a new process) computes none; saving the model drops them."""
    from exspin.training import forward
    from exspin.training.common import DATASET_CACHE, LoraSettings
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer, train_selfplay

    calls = []
    original = forward.scored_outputs
    monkeypatch.setattr(forward, "scored_outputs",
                        lambda model, packed, shape: calls.append(1) or original(model, packed, shape))
    pairs = [{"prompt": f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": f"SELECT {i} FROM singer", "rejected": "SELECT 1"} for i in range(4)]
    settings = SelfPlaySettings(bf16=False, batch_size=2, max_length=128, max_steps=1,
                                lora=LoraSettings(r=4, alpha=8, dropout=0.0), gradient_checkpointing=False)
    references = []
    for _ in range(2):
        trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), pairs, settings, tmp_path)
        references.append([trainer.train_dataset[i]["ref_chosen_logps"] for i in range(len(pairs))])
        del trainer
    assert len(calls) == 2 and references[0] == references[1]  # two batches, computed once
    # Other pairs in the same folder are not served the old pairs' log-probs.
    build_selfplay_trainer(str(tiny_model_dir), pairs[:2], settings, tmp_path)
    assert len(calls) == 3
    train_selfplay(str(tiny_model_dir), pairs, settings, tmp_path)
    assert (tmp_path / "model").is_dir() and not (tmp_path / "trainer" / DATASET_CACHE).exists()


def test_training_cut_short_continues_from_its_checkpoint(tiny_model_dir, tmp_path, capsys):
    """Killed after step 3 of 4 with a checkpoint at step 2: training again continues from step 2, logs
    each step once, and ends with the weights of a training never cut; the checkpoints then go."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from exspin.training.common import LoraSettings, train_resumably
    from exspin.training.sft import SFTSettings, build_sft_trainer, train_sft

    records = [{"prompt": f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n",
                "completion": f"SELECT {i} FROM singer"} for i in range(8)]
    settings = SFTSettings(bf16=False, batch_size=2, max_length=128, save_every_steps=2, learning_rate=1e-3,
                           lora=LoraSettings(r=4, alpha=8))
    whole = train_sft(str(tiny_model_dir), records, settings, tmp_path / "whole")

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    cut = tmp_path / "cut"
    trainer, _ = build_sft_trainer(str(tiny_model_dir), records, settings, cut)
    trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        train_resumably(trainer, [str(tiny_model_dir), records, settings.model_dump(mode="json")])
    assert [p.name for p in (cut / "trainer").glob("checkpoint-*")] == ["checkpoint-2"]
    (cut / "trainer" / "checkpoint-3").mkdir()  # as if cut short while saving step 3: not whole
    resumed = train_sft(str(tiny_model_dir), records, settings, cut)
    steps = [json.loads(line)["step"] for line in (cut / "train_log.jsonl").open()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "whole" / "train_log.jsonl").open()]
    assert steps[:4] == [1, 2, 3, 4]  # then trl's summary row
    expected, got = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) < 1e-6
    assert (expected["model.layers.0.self_attn.q_proj.weight"] != load_file(
        tiny_model_dir / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]).any()  # it did train
    assert not list((cut / "trainer").glob("checkpoint-*"))
    # Cut short again, then trained on other records: that checkpoint is not theirs to resume from.
    stale = tmp_path / "stale"
    trainer, _ = build_sft_trainer(str(tiny_model_dir), records, settings, stale)
    trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        train_resumably(trainer, [str(tiny_model_dir), records, settings.model_dump(mode="json")])
    capsys.readouterr()
    train_sft(str(tiny_model_dir), records[:6], settings, stale)
    assert "resuming" not in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (stale / "train_log.jsonl").open()][:3] == [1, 2, 3]


def test_full_fine_tuning_keeps_float32_master_weights(tiny_model_dir, tmp_path):
    """bf16 full fine-tuning: float32 weights under autocast (bf16 weights would round away lr 5e-6
    updates); bf16 LoRA: a bf16 base, but the adapter that trains in float32."""
    from exspin.training.common import LoraSettings
    from exspin.training.sft import SFTSettings, build_sft_trainer

    records = [{"prompt": "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"}] * 2
    full, _ = build_sft_trainer(str(tiny_model_dir), records, SFTSettings(bf16=True, lora=None), tmp_path / "full")
    assert {p.dtype for p in full.model.parameters()} == {torch.float32} and full.args.bf16
    lora, _ = build_sft_trainer(str(tiny_model_dir), records, SFTSettings(bf16=True, lora=LoraSettings(r=4, alpha=8)),
                                tmp_path / "lora")
    trained = {p.dtype for p in lora.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in lora.model.parameters() if not p.requires_grad}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}


def test_bf16_is_decided_once_for_loader_and_trainer(tiny_model_dir, tmp_path):
    """A setting wins; unset, bf16 is used where the hardware computes it fast (models.default_dtype),
    and the trainer's flag and the loaded weights follow the same answer."""
    from exspin.models import default_dtype
    from exspin.training.common import uses_bf16
    from exspin.training.sft import SFTSettings, build_sft_trainer

    assert uses_bf16(SFTSettings(bf16=True)) is True
    assert uses_bf16(SFTSettings(bf16=False)) is False
    assert uses_bf16(SFTSettings()) == (default_dtype() == torch.bfloat16)
    records = [{"prompt": "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"}] * 2
    trainer, _ = build_sft_trainer(str(tiny_model_dir), records, SFTSettings(bf16=False), tmp_path / "fp32")
    assert not trainer.args.bf16 and {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_repaired_samples_are_chosen_against_their_own_failing_text(concert):
    """repaired_chosen: a sample that failed for a misspelt column and runs right once repaired is a right answer
    after the question's own; paired with its failing original, and the only chosen side of a question the model
    never answered right. Off, nothing changes; a repair that runs but answers wrongly is never chosen."""
    from exspin.feedback import repair_samples

    split, (first, second) = concert
    samples = [["SELECT count(*) FROM stadium", "SELECT count(singerid) FROM singer", "SELECT count(*) FROM singer"],
               ["SELECT count(singerid) FROM singer", "SELECT count(*) FROM stadium", "SELECT max(agee) FROM singer"]]
    with SqlRunner(workers=1) as runner:
        labelled = label_samples(split, [first, second], samples, runner)
        repaired = repair_samples(split, labelled, runner)
        assert repair_samples(split, repaired, runner) == repaired  # repaired once
    assert [(a.label, a.repaired_label) for a in repaired] == [
        ("wrong_result", None), ("runtime_error", "correct"), ("correct", None),
        ("runtime_error", "correct"), ("wrong_result", None), ("runtime_error", "wrong_result")]
    assert repaired[1].repaired_sql == "SELECT COUNT(Singer_ID) FROM singer"
    prompts = {first.index: "P0", second.index: "P1"}
    fixed, own = normal_form("SELECT COUNT(Singer_ID) FROM singer"), normal_form("SELECT count(*) FROM singer")

    def pairs(method="dpo", answers=repaired, **rules):
        return [(p.index, p.chosen_source, p.chosen, p.rejected) for p in
                make_pairs(method, [first, second], prompts, answers, PairRules(pairs_per_question=3, **rules))]

    stadium, misspelt = normal_form(samples[0][0]), normal_form(samples[0][1])
    assert pairs(repaired_chosen=True) == [
        (first.index, "sample", own, stadium), (first.index, "repaired", fixed, misspelt),
        (second.index, "repaired", fixed, misspelt), (second.index, "repaired", fixed, stadium),
        (second.index, "repaired", fixed, normal_form(samples[1][2]))]
    assert pairs() == pairs(answers=labelled) == [(first.index, "sample", own, stadium),
                                                  (first.index, "sample", own, misspelt)]
    assert pairs("rft", repaired_chosen=True) == [(first.index, "sample", own, own), (first.index, "repaired", fixed, fixed),
                                                  (second.index, "repaired", fixed, fixed)]
    with pytest.raises(ValueError, match="DPO and RFT rule"):
        make_pairs("exspin", [first], prompts, repaired, PairRules(repaired_chosen=True))
    # rejected_after_repair: the misspelt sample scores right once repaired, so it is nobody's rejected side;
    # the one whose repair answers wrongly stays rejected. Without repaired labels nothing changes.
    assert pairs(rejected_after_repair=True) == [(first.index, "sample", own, stadium)]
    assert pairs(rejected_after_repair=True, repaired_chosen=True) == [
        (first.index, "sample", own, stadium), (second.index, "repaired", fixed, stadium),
        (second.index, "repaired", fixed, normal_form(samples[1][2]))]
    assert pairs(answers=labelled, rejected_after_repair=True) == pairs(answers=labelled)
    assert [PairRules(**rule).uses_repaired_labels() for rule in ({}, {"repaired_chosen": True},
                                                                {"rejected_after_repair": True})] == [False, True, True]
    # ExSPIN (gold chosen): the misspelt sample and the second question's are spared; the wrong repair is not.
    gold = normal_form(first.gold_sql), normal_form(second.gold_sql)
    exspin = make_pairs("exspin", [first, second], prompts, repaired, PairRules(rejected_after_repair=True))
    assert [(p.index, p.chosen_source, p.chosen, p.rejected) for p in exspin] == [
        (first.index, "gold", gold[0], stadium), (second.index, "gold", gold[1], stadium),
        (second.index, "gold", gold[1], normal_form(samples[1][2]))]


def test_dpo_pairs_per_question_and_the_gold_where_the_model_never_answers_right(concert):
    split, (first, second) = concert
    samples = [["SELECT count(*) FROM stadium", "SELECT count(singer_id) FROM singer", "SELECT nope FROM singer",
                "SELECT COUNT(*)+0 FROM singer", "SELECT name FROM singer WHERE"],
               ["SELECT nope FROM concert", "SELECT count(*) FROM stadium"]]
    with SqlRunner(workers=1) as runner:
        labelled = label_samples(split, [first, second], samples, runner)
    prompts = {first.index: "P0", second.index: "P1"}

    def pairs(**rules):
        return [(p.index, p.chosen_source, p.chosen, p.rejected_label)
                for p in make_pairs("dpo", [first, second], prompts, labelled, PairRules(**rules))]

    right = ["SELECT COUNT(singer_id) FROM singer", "SELECT COUNT(*) + 0 FROM singer"]
    assert pairs() == [(first.index, "sample", right[0], "wrong_result")]  # one pair; none without a right answer
    # Up to 3 pairs: each wrong answer against the right answers in turn.
    assert pairs(pairs_per_question=3) == [(first.index, "sample", right[0], "wrong_result"),
                                           (first.index, "sample", right[1], "runtime_error"),
                                           (first.index, "sample", right[0], "syntax_error")]
    # The second question was never answered right: with the switch, the gold is its chosen side.
    gold = normal_form(second.gold_sql)
    assert pairs(gold_when_never_right=True)[1:] == [(second.index, "gold", gold, "runtime_error")]
    with pytest.raises(ValueError, match="DPO and RFT rule"):
        make_pairs("exspin", [first], prompts, labelled, PairRules(pairs_per_question=2))
    # RFT: rows of the distinct right answers (no rejected side), up to pairs_per_question; the gold where none
    rft = make_pairs("rft", [first, second], prompts, labelled, PairRules(pairs_per_question=3,
                                                                           gold_when_never_right=True))
    assert [(p.index, p.chosen_source, p.chosen) for p in rft] == [(first.index, "sample", right[0]),
                                                                   (first.index, "sample", right[1]),
                                                                   (second.index, "gold", gold)]
    assert all(p.rejected == p.chosen for p in rft)
    assert len(make_pairs("rft", [first, second], prompts, labelled)) == 1
    # With the gold: every question's gold first, then its own right answers (issue 27's RFT control).
    with_gold = make_pairs("rft", [first, second], prompts, labelled, PairRules(pairs_per_question=2, with_gold=True))
    assert [(p.index, p.chosen_source, p.chosen) for p in with_gold] == [
        (first.index, "gold", normal_form(first.gold_sql)), (first.index, "sample", right[0]),
        (first.index, "sample", right[1]), (second.index, "gold", gold)]
    # A right answer in the gold's own form is not repeated and takes none of the question's slots; a
    # question never answered right gets its gold once, with gold_when_never_right or without.
    with SqlRunner(workers=1) as runner:
        gold_first = label_samples(split, [first, second], [[first.gold_sql, *samples[0][1:4]], samples[1]], runner)
    for never_right in (False, True):
        rows = make_pairs("rft", [first, second], prompts, gold_first,
                          PairRules(pairs_per_question=2, with_gold=True, gold_when_never_right=never_right))
        assert [(p.index, p.chosen_source, p.chosen) for p in rows] == [
            (first.index, "gold", normal_form(first.gold_sql)), (first.index, "sample", right[0]),
            (first.index, "sample", right[1]), (second.index, "gold", gold)]
    with pytest.raises(ValueError, match="RFT rule"):
        make_pairs("dpo", [first], prompts, labelled, PairRules(with_gold=True))


def test_rft_iteration_trains_the_chosen_answers_with_the_sft_trainer(concert, tiny_model_dir, tmp_path):
    """method rft: an iteration's rows train by SFT (no preference loss, no reference) on their chosen side."""
    from types import SimpleNamespace

    from exspin import pipeline
    from exspin.config import RunConfig
    from exspin.records import Pair

    _, (first, _) = concert
    prompt = "<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n"
    rows = [Pair(index=first.index, db_id=first.db_id, prompt=prompt, chosen="SELECT count(*) FROM singer",
                 rejected="SELECT count(*) FROM singer", rejected_label="correct", chosen_source="sample")] * 4
    config = RunConfig.model_validate({"selfplay": {"method": "rft", "samples_per_question": 4, "train": {
        "batch_size": 2, "bf16": False, "learning_rate": 1e-3, "lora": None}}})
    summary = {"training_rows": 4, "warnings": []}
    model, steps = pipeline._train_iteration(SimpleNamespace(config=config), 1, str(tiny_model_dir), rows,
                                             tmp_path, summary)
    assert (model / "config.json").is_file()
    assert steps and all("rewards/chosen" not in row for row in steps)  # SFT's log, not the preference loss's
    assert any("loss" in row for row in steps)


def test_replay_rows_train_the_nll_alone(concert, tiny_model_dir, tmp_path):
    """Replay rows are the gold on both sides: the preference loss gives them no gradient, the NLL term does."""
    from exspin.config import RunConfig
    from exspin.feedback import replay_rows
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    split, examples = concert
    prompts = {e.index: f"<|im_start|>user\nQ{e.index}<|im_end|>\n<|im_start|>assistant\n" for e in examples}
    rows = replay_rows(examples, prompts, 5, seed=0)
    assert len(rows) == 5 and all(r.replay and r.chosen == r.rejected == normal_form(r_example.gold_sql)
                                  for r, r_example in ((r, split.examples[r.index]) for r in rows))
    assert rows == replay_rows(examples, prompts, 5, seed=0) != replay_rows(examples, prompts, 5, seed=1)
    settings = SelfPlaySettings(bf16=False, batch_size=1, max_length=128, lora=None, nll_weight=0.0,
                                precompute_reference=False)
    norms = {}
    for nll in (0.0, 1.0):
        trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), [rows[0].for_training()],
                                               settings.model_copy(update={"nll_weight": nll}), tmp_path / str(nll))
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        norms[nll] = sum(p.grad.abs().sum().item() for p in trainer.model.parameters() if p.grad is not None)
    assert norms[1.0] > 1e-2 and norms[0.0] < 1e-4 * norms[1.0], norms  # float noise where the sides cancel
    with pytest.raises(ValueError, match="nll_weight"):
        RunConfig.model_validate({"selfplay": {"replay_ratio": 0.5, "train": {"nll_weight": 0.0}}})


@pytest.mark.parametrize("loss, at_start", [("sigmoid", math.log(2)), ("apo_zero", 1.0), ("nca_pair", 2 * math.log(2)),
                                            ("ipo", (1 / (2 * 0.1)) ** 2), ("sigmoid_norm", math.log(2))])
def test_selfplay_trains_with_the_chosen_preference_loss(loss, at_start, tiny_model_dir, tmp_path):
    """selfplay.train.loss is trl's loss: with the policy still equal to its reference (both log-ratios 0)
    each loss has a known value, and a replay row (the same answer on both sides) still gets no gradient
    from it, except from NCA, which a config with replay refuses."""
    from exspin.config import RunConfig
    from exspin.records import PreferencePair
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    prompt = "<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n"
    settings = SelfPlaySettings(bf16=False, batch_size=1, max_length=128, lora=None, nll_weight=0.0,
                                precompute_reference=False, loss=loss, beta=0.1)

    def gradient(trainer, batch):
        trainer.model.zero_grad()
        value = trainer.compute_loss(trainer.model, batch)
        value.backward()
        return value.item(), sum(p.grad.abs().sum().item() for p in trainer.model.parameters() if p.grad is not None)

    grads = {}
    for name, rejected in (("pair", "SELECT name FROM singer"), ("replay", "SELECT count(*) FROM singer")):
        pair = PreferencePair(prompt=prompt, chosen="SELECT count(*) FROM singer", rejected=rejected)
        trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), [pair], settings, tmp_path / name)
        assert trainer.loss_types == [loss]
        batch = next(iter(trainer.get_train_dataloader()))
        value, grads[name] = gradient(trainer, batch)
        if name == "pair":
            assert value == pytest.approx(at_start, rel=1e-4)
    # at the start every log-ratio is 0, where even NCA's pull on equal sides vanishes
    assert grads["pair"] > 1e-3 and grads["replay"] < 1e-4 * grads["pair"], grads
    with torch.no_grad():  # the policy moved away from its reference, as training moves it
        torch.manual_seed(0)
        for parameter in trainer.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    _, moved = gradient(trainer, batch)
    if loss == "nca_pair":
        assert moved > 1e-2 * grads["pair"], (moved, grads)
    else:
        assert moved < 1e-4 * grads["pair"], (moved, grads)
    replay = {"selfplay": {"replay_ratio": 0.5, "train": {"loss": loss}}}
    if loss == "nca_pair":
        with pytest.raises(ValueError, match="nca_pair trains them too"):
            RunConfig.model_validate(replay)
    else:
        RunConfig.model_validate(replay)
    if loss != "sigmoid":  # RFT is SFT: it has no preference term to choose
        with pytest.raises(ValueError, match="train.loss"):
            RunConfig.model_validate({"selfplay": {"method": "rft", "train": {"loss": loss}}})


def test_training_reports_to_tensorboard_when_asked(tiny_model_dir, tmp_path):
    from exspin.training.sft import SFTSettings, train_sft

    records = [{"prompt": f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n",
                "completion": f"SELECT {i} FROM singer"} for i in range(4)]
    settings = SFTSettings(bf16=False, batch_size=2, max_length=128, max_steps=2, report_to=["tensorboard"])
    train_sft(str(tiny_model_dir), records, settings, tmp_path / "sft")
    events = list((tmp_path / "sft" / "trainer" / "runs").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_cpu_dropout_draws_a_seeded_bernoulli_mask_and_its_gradient():
    from exspin.training.dropout import CPUDropout

    dropout = CPUDropout(0.05)
    x = torch.ones(400, 1000, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.05) < 0.003  # 400,000 draws: 5 sigma is 0.0017
    assert torch.allclose(y[~dropped], torch.full_like(y[~dropped], 1 / 0.95))
    y.sum().backward()
    assert torch.equal(x.grad == 0, dropped)  # the gradient flows through kept elements only, scaled
    torch.manual_seed(3)
    assert torch.equal(dropout(x), y)  # a seed fixes the mask
    assert not torch.equal(dropout(x), y)  # and the next draw differs
    dropout.eval()
    assert dropout(x) is x


def test_lora_dropout_uses_cpu_masks(tiny_model_dir, tmp_path):
    """SFT's LoRA dropout draws CPU masks; self-play trains without dropout (trl's disable_dropout)."""
    from exspin.training.common import LoraSettings
    from exspin.training.dropout import CPUDropout
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer
    from exspin.training.sft import SFTSettings, build_sft_trainer

    lora = LoraSettings(r=4, alpha=8, dropout=0.1)
    prompt = "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n"
    sft, _ = build_sft_trainer(str(tiny_model_dir), [{"prompt": prompt, "completion": "SELECT count(*) FROM t"}],
                               SFTSettings(bf16=False, lora=lora), tmp_path / "sft")
    dropouts = [m for m in sft.model.modules() if isinstance(m, CPUDropout)]
    assert dropouts and all(d.p == 0.1 for d in dropouts)
    selfplay, _, _ = build_selfplay_trainer(str(tiny_model_dir), [{"prompt": prompt, "chosen": "SELECT 2",
                                                                  "rejected": "SELECT 1"}],
                                            SelfPlaySettings(bf16=False, lora=lora), tmp_path / "selfplay")
    for trainer in (sft, selfplay):
        assert not any(type(m) is torch.nn.Dropout and m.p > 0 for m in trainer.model.modules())


def test_lora_on_the_top_layers_stops_the_backward_pass_below_them(tiny_model_dir, tmp_path):
    """lora.layers=1 of the tiny model's 2: adapters on the top layer only, and, once training begins
    (checkpointing set up as Trainer.train does, and on for this batch), no gradient is computed through the
    frozen layer below; the adapters' gradients are those the input-grad hooks would give. Under reentrant
    checkpointing the hooks stay: the adapters then need them for any gradient at all."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from exspin.errors import UserError
    from exspin.training.common import LoraSettings
    from exspin.training.sft import SFTSettings, build_sft_trainer

    records = [{"prompt": "<|im_start|>user\nHow many singers are there?<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT count(*) FROM singer"},
               {"prompt": "<|im_start|>user\nList the stadiums.<|im_end|>\n<|im_start|>assistant\n",
                "completion": "SELECT name FROM stadium"}]
    steps, reached = {}, {}
    for layers, begin, reentrant in ((None, True, False), (1, False, False), (1, True, False), (1, True, True)):
        settings = SFTSettings(bf16=False, batch_size=2, max_length=256, checkpoint_over_tokens=1,
                               lora=LoraSettings(r=4, alpha=8, dropout=0.0, layers=layers))
        trainer, _ = build_sft_trainer(str(tiny_model_dir), records, settings,
                                       tmp_path / f"{layers}{begin}{reentrant}")
        adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in trainer.model.named_parameters()
                   if "lora_" in name}
        assert adapted == ({"0", "1"} if layers is None else {"1"})
        trainer.args.gradient_checkpointing_kwargs = {"use_reentrant": reentrant}
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        if begin:  # what Trainer.train() does next
            trainer.callback_handler.on_train_begin(trainer.args, trainer.state, trainer.control)
        calls = []
        bottom = trainer.model.get_base_model().model.layers[0].mlp
        hook = bottom.register_full_backward_hook(lambda *args, calls=calls: calls.append(1))
        steps[layers, begin, reentrant] = _one_step(trainer, 2, ("entropy",))[:3]
        hook.remove()
        reached[layers, begin, reentrant] = bool(calls)
        assert {m.gradient_checkpointing for m in trainer.model.modules()
                if isinstance(m, GradientCheckpointingLayer)} == {True}  # the batch ran checkpointed
    assert reached == {(None, True, False): True, (1, False, False): True, (1, True, False): False,
                       (1, True, True): True}
    _assert_same_step(steps[1, False, False], steps[1, True, False])
    _assert_same_step(steps[1, False, False], steps[1, True, True])
    with pytest.raises(UserError, match="2 decoder layers"):
        build_sft_trainer(str(tiny_model_dir), records, SFTSettings(bf16=False, lora=LoraSettings(layers=3)),
                          tmp_path / "too_many")


def test_lora_on_the_top_layers_keeps_the_backward_short_with_a_reference_pass_each_step(tiny_model_dir, tmp_path,
                                                                                         monkeypatch):
    """A reference pass in training (not precomputed) turns checkpointing off and on, which adds the input-grad
    hook again: the steps after it still do not backpropagate below the adapters."""
    import contextlib

    from trl.trainer import dpo_trainer

    from exspin.training.common import LoraSettings
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    pairs = [{"prompt": f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n",
              "chosen": f"SELECT {i} FROM singer", "rejected": "SELECT 1"} for i in range(3)]
    settings = SelfPlaySettings(bf16=False, batch_size=1, max_length=128, max_steps=3, precompute_reference=False,
                                lora=LoraSettings(r=4, alpha=8, dropout=0.0, layers=1), save_every_steps=None)
    trainer, _, _ = build_selfplay_trainer(str(tiny_model_dir), pairs, settings, tmp_path)
    calls, hooked = [], []
    trainer.model.get_base_model().model.layers[0].mlp.register_full_backward_hook(lambda *args: calls.append(1))
    embeddings = trainer.model.get_input_embeddings()
    original = dpo_trainer.disable_gradient_checkpointing

    @contextlib.contextmanager
    def reference_pass(*args, **kwargs):  # records what the reference pass leaves behind
        with original(*args, **kwargs):
            yield
        hooked.append(any(getattr(h, "__name__", "") == "make_inputs_require_grads"
                          for h in embeddings._forward_hooks.values()))

    monkeypatch.setattr(dpo_trainer, "disable_gradient_checkpointing", reference_pass)
    trainer.train()
    assert len(hooked) == 3 and all(hooked)  # each step's reference pass put a hook back ...
    assert not calls  # ... and none of the 3 steps' backward reached the bottom layer
