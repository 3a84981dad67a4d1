"""One trainer run, phase by phase: load -> prepare data -> (stored already?) -> model and
checkpoint -> evaluate before -> train -> evaluate after -> save.

Bad data fails before any model weights are loaded. `validate_only` (the CPU pre-flight)
stops after the data report (rows, tokens, steps, ETA); an hf:// base model is fetched into
the shared model cache first in both, so after a pre-flight the training run finds it cached.
In a run of several processes every rank runs every phase (each collective in the same
order); rank 0 alone reports progress and writes the model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_crd.status import Metrics, Progress, Sample
from kubetune_crd.trainer_contract import TrainerResult, TrainerRunConfig

from kubetune_trainer import evaluation, fast_paths, quantization, runtime
from kubetune_trainer.checkpointing import Checkpointer
from kubetune_trainer.checkpoints import TrainState
from kubetune_trainer.distributed import SINGLE, Dist
from kubetune_trainer.errors import PreemptedError, RetryableError
from kubetune_trainer.metrics_text import figures, perplexity
from kubetune_trainer.model_cache import BaseModelPin, resolve_base_model
from kubetune_trainer.modeling import load_model, load_tokenizer
from kubetune_trainer.output import S3Store, StoredModel, VolumeStore
from kubetune_trainer.parallel import model_for_saving, resolve_strategy, wrap
from kubetune_trainer.plan import DataPlan, fingerprint, prepare_data
from kubetune_trainer.preference import (
    HeldOut,
    PairLoss,
    evaluate_pairs,
    prepare_policy,
    reference_model,
)
from kubetune_trainer.preflight import validation_report
from kubetune_trainer.progress import ProgressReporter
from kubetune_trainer.promoting import promote
from kubetune_trainer.runtime import DeviceInfo, pick_device
from kubetune_trainer.saving import job_identity, model_info, open_store, save_model
from kubetune_trainer.tracking import Tracking
from kubetune_trainer.train import (
    LoopConfig,
    StepLoss,
    StopFlag,
    Training,
    evaluate,
    make_optimizer,
)
from kubetune_trainer.train import train_loop as run_loop

Details = dict[str, Any]


log = logging.getLogger(__name__)


@dataclass
class Run:
    """What every phase of one run needs."""

    cfg: TrainerRunConfig
    reporter: ProgressReporter
    stop: StopFlag
    dist: Dist
    work: Path
    tracking: Tracking = field(default_factory=lambda: Tracking(None, None))
    pin: BaseModelPin | None = None
    """An hf:// base model's reference and commit (`cfg.base_model` is then its snapshot)."""

    @property
    def hp(self) -> Any:
        return self.cfg.spec.hyperparameters

    def report(self, progress: Progress) -> None:
        """A logging step: the status (rank 0's reporter) and the trackers."""
        self.reporter.report(progress)
        self.tracking.train(progress)

    def eval_point(self, step: int, loss: float | None) -> None:
        """A held-out loss: an `eval` log line (the API's eval series) and the trackers."""
        self.reporter.eval(step, loss)
        self.tracking.eval(step, loss)

    def agree_stop(self, where: str) -> None:
        """Stop every rank together when any of them was signalled."""
        if self.dist.any(self.stop.requested):
            raise PreemptedError(f"stopped by signal {self.stop.signal} during {where}")


@dataclass
class Setup:
    """The model ready to train, and where training starts from."""

    training: Training
    checkpoints: Checkpointer
    state: TrainState
    pad_id: int
    resumed: bool
    answers_before: list[str] | None = None
    """The base model's answers to spec.evaluation.prompts (full fine-tuning; LoRA: at the end)."""
    reference: Any = None
    """DPO with full fine-tuning: the frozen base model (LoRA: the policy, adapter disabled)."""


@dataclass
class Evaluated:
    """What rank 0 adds when it saves: the champion's figure and the answers."""

    metrics: Metrics
    samples: list[Sample]
    note: str | None = None


def run_job(
    cfg: TrainerRunConfig,
    reporter: ProgressReporter,
    stop: StopFlag,
    *,
    validate_only: bool = False,
    work_dir: Path | None = None,
    assumed_flops: float | None = None,
    dist: Dist = SINGLE,
    world_size: int | None = None,
    target_device: str | None = None,
    gpu_memory_gib: float | None = None,
) -> tuple[TrainerResult, Details]:
    """Run the job; returns the result and a details dict (the validation report).
    `world_size`: the processes the report plans for (default: this run's);
    `target_device` / `gpu_memory_gib`: what the validation report plans for."""
    if not validate_only:  # refused before the data is fetched (the GPU check needs torch)
        import torch

        quantization.require_device(cfg.spec.method, "cuda" if torch.cuda.is_available() else "cpu")
    own_work = work_dir is None
    work = work_dir or Path(tempfile.mkdtemp(prefix="kubetune-trainer-"))
    try:
        reporter.stage("loading")  # an hf:// base model is fetched (or found cached) first
        local_cfg, pin = resolve_base_model(cfg, work)
        run = Run(local_cfg, reporter, stop, dist, work, pin=pin)
        tokenizer = _load_tokenizer(run)
        plan = _prepare_data(run, tokenizer, world_size or dist.world_size)
        if validate_only:
            return _validation(run, plan, assumed_flops, target_device, gpu_memory_gib)
        return _train_and_store(run, tokenizer, plan)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _load_tokenizer(run: Run) -> Any:
    tokenizer = load_tokenizer(run.cfg.base_model)
    run.stop.check("loading")
    return tokenizer


def _prepare_data(run: Run, tokenizer: Any, world_size: int) -> DataPlan:
    run.reporter.stage("validating")
    plan = prepare_data(run.cfg, tokenizer, run.work, world_size)
    # Each rank fetched the data itself: all must train on the same bytes.
    if run.dist.any(plan.fetched.sha256 != run.dist.from_main(plan.fetched.sha256)):
        raise RetryableError("the training processes read different datasets (changed meanwhile?)")
    return plan


def _validation(
    run: Run,
    plan: DataPlan,
    assumed_flops: float | None,
    target_device: str | None,
    gpu_memory_gib: float | None,
) -> tuple[TrainerResult, Details]:
    """The report (`preflight.py`) for the device the run will train on (default: this one)."""
    import torch

    device_type = target_device or ("cuda" if torch.cuda.is_available() else "cpu")
    return validation_report(run.cfg, plan, device_type, assumed_flops, gpu_memory_gib, run.pin)


def _train_and_store(run: Run, tokenizer: Any, plan: DataPlan) -> tuple[TrainerResult, Details]:
    details = plan.summary()
    store = open_store(run.cfg)
    existing = store.existing(run.cfg.model_name, job_identity(run.cfg))
    if existing is not None:  # a retry after the model was stored: nothing to redo
        return _already_stored(run, existing), details
    if isinstance(store, S3Store) and run.dist.main:
        store.claim(run.cfg.model_name, job_identity(run.cfg))  # fail before training if taken
    setup = _load_model(run, plan, tokenizer)
    run.tracking = Tracking.open(
        run.cfg, run.dist.main, setup.state.step if setup.resumed else None
    )
    try:
        if not setup.resumed:
            _evaluate_before(run, setup, plan, tokenizer)
        started = time.monotonic()
        state = _train(run, setup, plan)
        metrics = _evaluate_after(run, setup, plan, state)
        if not plan.preference:  # bits per byte of the held-out answers: a supervised figure
            metrics = evaluation.with_bits_per_byte(metrics, tokenizer, plan)
        stored, final = _save(run, setup, plan, store, metrics, tokenizer)
    except BaseException as exc:
        # A preempted run resumes in the next pod: its MLflow run stays open for it.
        run.tracking.finish(
            None, None, succeeded=None if isinstance(exc, PreemptedError) else False
        )
        raise
    seconds = time.monotonic() - started
    return _result(run, state, final, stored, seconds, setup), details


def _already_stored(run: Run, existing: StoredModel) -> TrainerResult:
    return TrainerResult(
        outcome="succeeded",
        message=f"model already stored by this job at {existing.uri}",
        model=model_info(run.cfg, existing, run.pin),
        metrics=Metrics.model_validate(existing.manifest.get("metrics") or {}),
        samples=evaluation.fit_samples(
            [Sample.model_validate(s) for s in existing.manifest.get("samples") or []]
        ),
    )


def _load_model(run: Run, plan: DataPlan, tokenizer: Any) -> Setup:
    """The model on this process's device, wrapped for the run's strategy, its optimizer, and
    the state of the newest complete checkpoint of this run when there is one."""
    import torch

    cfg, hp, dist = run.cfg, run.hp, run.dist
    device = pick_device(dist.local_rank, dist.local_world_size)
    runtime.seed_everything(hp.seed)
    strategy = resolve_strategy(
        cfg.spec.distributed.strategy, cfg.spec.method.type, dist.world_size
    )
    quantization.require_device(cfg.spec.method, device.device.type, strategy)
    # FSDP loads on the CPU and moves only this process's shards to the device.
    load_on = DeviceInfo(torch.device("cpu"), device.bf16, "cpu") if strategy == "fsdp" else device
    model = load_model(cfg.base_model, cfg.spec.method, load_on, hp.gradient_checkpointing)
    reference = None
    if plan.preference:
        prepare_policy(model)
        reference = reference_model(
            cfg.base_model, cfg.spec.method, strategy, load_on, device, dist
        )
    fast = fast_paths.enable(model, device, hp.torch_compile)
    log.info("fast paths: %s", fast.describe())
    run.agree_stop("loading")
    par = wrap(model, strategy, device, dist)
    optimizer, scheduler = make_optimizer(par.model, hp, plan.total_steps, device)
    ckpt = Checkpointer(
        Path(cfg.checkpoint_dir),
        cfg.spec.checkpoint.every_steps,
        cfg.spec.checkpoint.keep,
        par,
        optimizer,
        scheduler,
        dist,
    )
    ckpt.clean()
    run_fingerprint = fingerprint(cfg, plan.fetched.sha256)
    state = ckpt.resume(run_fingerprint)
    resumed = state is not None
    if state is None:
        state = TrainState(
            fingerprint=run_fingerprint,
            total_steps=plan.total_steps,
            world_size=dist.world_size,
            sharded=par.sharded,
        )
    else:
        run.reporter.stage("resuming", step=state.step, total_steps=state.total_steps)
    training = Training(par, optimizer, scheduler, device, dist)
    pad_id = int(tokenizer.pad_token_id)
    return Setup(training, ckpt, state, pad_id, resumed, reference=reference)


def _held_out(run: Run, setup: Setup, plan: DataPlan, stop: StopFlag | None = None) -> HeldOut:
    """The held-out loss (and, for DPO, reward margin and accuracy), over all ranks."""
    t, hp = setup.training, run.hp
    if plan.preference:
        beta = run.cfg.spec.method.dpo.beta
        return evaluate_pairs(
            t.par.model, setup.reference, plan.eval_rows, hp.batch_size, setup.pad_id, beta,
            t.device, stop, t.dist,
        )  # fmt: skip
    rows = plan.eval_rows
    return HeldOut(evaluate(t.par.model, rows, hp.batch_size, setup.pad_id, t.device, stop, t.dist))


def _evaluate_before(run: Run, setup: Setup, plan: DataPlan, tokenizer: Any) -> None:
    run.reporter.stage("evaluating")
    t = setup.training
    before = _held_out(run, setup, plan, run.stop)
    setup.state.eval_loss_before = before.loss
    setup.state.reward_margin_before = before.reward_margin
    setup.state.reward_accuracy_before = before.reward_accuracy
    run.eval_point(0, setup.state.eval_loss_before)
    if run.dist.main and not t.par.sharded:  # a sharded model answers nothing on one rank
        setup.answers_before = evaluation.answers_before(run.cfg, t.par.model, tokenizer)


def _train(run: Run, setup: Setup, plan: DataPlan) -> TrainState:
    state, t = setup.state, setup.training

    def evaluate_now(step: int) -> None:  # every rank: the loss is summed over their shards
        run.eval_point(step, _held_out(run, setup, plan).loss)

    step_loss: StepLoss | None = None
    if plan.preference:
        beta = run.cfg.spec.method.dpo.beta
        step_loss = PairLoss(plan.train_rows, setup.pad_id, beta, setup.reference)

    run.reporter.stage("training", step=state.step, total_steps=state.total_steps)
    state = run_loop(
        t,
        plan.train_rows,
        plan.schedule,
        state,
        LoopConfig(hp=run.hp, pad_id=setup.pad_id, evaluate=evaluate_now),
        run.report,
        run.stop,
        setup.checkpoints,
        step_loss,
    )
    run.agree_stop("training")
    return state


def _evaluate_after(run: Run, setup: Setup, plan: DataPlan, state: TrainState) -> Metrics:
    run.reporter.stage("evaluating", step=state.step, total_steps=state.total_steps, fraction=1.0)
    after = _held_out(run, setup, plan)
    eval_after = after.loss
    run.eval_point(state.step, eval_after)
    last_losses = [loss for _, loss in state.losses[-max(run.hp.logging_steps, 1) :]]
    per_row = 2 if plan.preference else 1  # DPO: a pair is a row, its answers two examples
    metrics = Metrics(
        train_loss=round(sum(last_losses) / len(last_losses), 6) if last_losses else None,
        eval_loss_before=state.eval_loss_before,
        eval_loss_after=eval_after,
        train_rows=len(plan.train.examples) // per_row,
        eval_rows=len(plan.held_out.examples) // per_row,
        train_tokens=state.real_tokens,
    )
    if plan.preference:  # a DPO loss is no token NLL: no perplexity
        return metrics.model_copy(
            update={
                "eval_reward_margin_before": state.reward_margin_before,
                "eval_reward_margin_after": after.reward_margin,
                "eval_reward_accuracy_before": state.reward_accuracy_before,
                "eval_reward_accuracy_after": after.reward_accuracy,
            }
        )
    return metrics.model_copy(
        update={
            "perplexity_before": perplexity(state.eval_loss_before),
            "perplexity_after": perplexity(eval_after),
        }
    )


def _save(
    run: Run,
    setup: Setup,
    plan: DataPlan,
    store: VolumeStore | S3Store,
    metrics: Metrics,
    tokenizer: Any,
) -> tuple[StoredModel | None, Evaluated]:
    """Rank 0 answers the prompts, scores the champion, writes the model (FSDP first gathers
    it there: every rank takes part) and then drops the checkpoints; the other ranks are done."""
    state, t = setup.state, setup.training
    plain = model_for_saving(t.par, run.cfg.base_model, run.cfg.spec.method, t.device, t.dist)
    if plain is None:
        return None, Evaluated(metrics, [])
    final = _evaluate_extra(run, setup, plan, plain, metrics, tokenizer)
    run.reporter.stage("saving", step=state.step, total_steps=state.total_steps, fraction=1.0)
    stored = save_model(
        run.cfg,
        store,
        plain,
        tokenizer,
        plan,
        final.metrics,
        t.device,
        run.work,
        final.samples,
        run.tracking.close_files(final.metrics, state.step),
        run.pin,
    )
    shutil.rmtree(run.cfg.checkpoint_dir, ignore_errors=True)
    return stored, final


def _evaluate_extra(
    run: Run, setup: Setup, plan: DataPlan, plain: Any, metrics: Metrics, tokenizer: Any
) -> Evaluated:
    """The answers before/after and the champion's bits per byte on this run's held-out text."""
    samples = evaluation.samples(run.cfg, plain, tokenizer, setup.answers_before)
    device = setup.training.device
    if next(plain.parameters()).device != device.device:  # FSDP's gathered copy is on the CPU
        device = DeviceInfo(next(plain.parameters()).device, False, "cpu")
    if plan.preference:  # the champion's figure is a supervised one (bits per byte)
        champion, note = None, ("current model not compared (dpo)" if run.cfg.champion else None)
    else:
        champion, note = evaluation.champion_bits_per_byte(run.cfg, plan, device, run.work)
    return Evaluated(metrics.model_copy(update={"champion_bits_per_byte": champion}), samples, note)


def _result(
    run: Run,
    state: TrainState,
    final: Evaluated,
    stored: StoredModel | None,
    seconds: float,
    setup: Setup,
) -> TrainerResult:
    where = ""
    if run.dist.active:
        where = f" on {run.dist.world_size} processes ({setup.training.par.strategy})"
    metrics = final.metrics
    note = f"; {final.note}" if final.note else ""
    model = model_info(run.cfg, stored, run.pin) if stored is not None else None
    tracking = run.tracking.finish(model.uri if model else None, metrics, state.step)
    if tracking is not None and tracking.error:
        note += f"; tracking stopped ({tracking.error})"
    # The alias pointer names the base model as asked (hf://...), not its cache snapshot.
    asked = run.cfg.model_copy(update={"base_model": run.pin.ref}) if run.pin else run.cfg
    promotion = promote(asked, model, metrics) if model is not None else None
    if promotion is not None:
        verdict = "promoted to" if promotion.promoted else "not promoted to"
        note += f"; {verdict} {promotion.alias}"
    return TrainerResult(
        outcome="succeeded",
        message=(f"trained {state.step} steps in {seconds:.0f}s{where}; {figures(metrics)}{note}"),
        model=model,
        metrics=metrics,
        samples=evaluation.fit_samples(final.samples),
        promotion=promotion,
        tracking=tracking,
    )
