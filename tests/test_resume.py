"""Resume from a checkpoint equals the uninterrupted run, for every registered trainer that steps.

Forget 8 rows, retain 20, batch 2 (4 steps an epoch), ``max_steps=10``, ``save_steps=5``: the run
crashes after step 7, resumes from checkpoint-5 (mid-epoch 2) and must end bit-identical (weights and
buffers such as BatchNorm running statistics) to a run that was never interrupted. The retain rows
paired with each forget row and SalUn's random labels depend on the epoch and the step, which is what
went wrong before: a mid-epoch resume kept the first epoch's retain pairing.
"""

import pytest
from classif_utils import blobs, tiny_resnet
from transformers import TrainerCallback
from utils import demo_world

from hf_unlearn.registry import list_methods

STEPPED = [e for e in list_methods() if e.kind == "trainer" and not getattr(e.cls, "one_shot", False)]
COMMON = dict(
    max_steps=10,
    save_steps=5,
    save_strategy="steps",
    seed=3,
    report_to=[],
    use_cpu=True,
    disable_tqdm=True,
    per_device_train_batch_size=2,
    logging_steps=1,
)


class Crash(Exception):
    pass


class CrashAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash


def _cases():
    for e in STEPPED:
        yield pytest.param(e, "causal_lm", id=f"{e.id}-causal_lm")
        if "classification" in e.cls.supported_tasks:
            yield pytest.param(e, "classification", id=f"{e.id}-classification")


def _world(task):
    if task == "causal_lm":
        data, tok, model = demo_world()
        return model, tok, data["forget"].select(range(8)), data["retain"].select(range(20)), 1e-3
    ds = blobs(28)
    forget = ds.filter(lambda r: r["labels"] == 0).select(range(8))
    retain = ds.filter(lambda r: r["labels"] != 0).select(range(16))
    return tiny_resnet(), None, forget, retain, 0.05


def _run(entry, task, out, callbacks=(), resume=None):
    model, tok, forget, retain, lr = _world(task)
    extra = {"optim": "sgd", "optim_args": "momentum=0.9"} if task == "classification" else {}
    args = entry.config_cls(output_dir=str(out), learning_rate=lr, **COMMON, **extra)
    trainer = entry.cls(
        model=model,
        args=args,
        forget_dataset=forget,
        retain_dataset=retain if entry.cls.uses_retain else None,
        processing_class=tok,
        callbacks=list(callbacks),
    )
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Crash:
        pass
    return model


@pytest.mark.parametrize("entry, task", list(_cases()))
def test_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path, entry, task):
    full = _run(entry, task, tmp_path / "full")
    _run(entry, task, tmp_path / "crashed", [CrashAfter(7)])
    assert (tmp_path / "crashed" / "checkpoint-5").is_dir()
    assert not (tmp_path / "crashed" / "checkpoint-10").exists()
    resumed = _run(entry, task, tmp_path / "crashed", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())
    assert worst == 0.0, f"resumed run differs from the uninterrupted one by {worst}"
    moved = max((a[k].double() - _world(task)[0].state_dict()[k].double()).abs().max().item() for k in a)
    assert moved > 0  # the runs did train
