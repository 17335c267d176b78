"""Ray for a run: join or start a cluster, place the learner and the rollout workers, and hand the step a
RemoteLearner and a WorkerPool (a Learner and a Sampler, rl_lora.types). `rl-lora train` is the same command
locally and on a cluster.

Placement: one placement group, bundles 0..L-1 the learners (ray.num_learners, one torch.distributed group when
L > 1), then a bundle per rollout worker.
- separate (default): SPREAD, so actors go to different nodes where the cluster has them;
- colocated: STRICT_PACK, all on one node, sharing its GPU when GPU requests are fractions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from dataclasses import dataclass

from rl_lora.cluster.pool import WorkerPool
from rl_lora.cluster.remote_errors import describe
from rl_lora.cluster.remote_learner import RemoteLearner
from rl_lora.config import RunConfig
from rl_lora.device import Compute
from rl_lora.errors import RunStopped, UserError
from rl_lora.types import Probe

PLACEMENT_TIMEOUT_S = 120


def _requests(config: RunConfig) -> tuple[dict, dict]:
    ray_config = config.ray
    # A vLLM engine spread over N GPUs needs its worker to hold N of them.
    tensor_parallel = config.rollout.vllm_tensor_parallel_size if config.rollout.backend == "vllm" else 1
    learner = {"CPU": ray_config.learner_cpus, "GPU": ray_config.learner_gpus}
    worker = {"CPU": ray_config.worker_cpus,
              "GPU": max(ray_config.worker_gpus, tensor_parallel if tensor_parallel > 1 else 0)}
    # Ray refuses empty bundles and zero entries; an actor that asks for nothing still takes a sliver of CPU.
    return tuple({k: v for k, v in bundle.items() if v > 0} or {"CPU": 0.01} for bundle in (learner, worker))


def connect(config: RunConfig) -> bool:
    """Join the configured cluster, or start a local one; True when this process started Ray (and stops it)."""
    import ray

    if ray.is_initialized():
        return False
    with _signal_handlers_kept():
        address = config.ray.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
            return True
        learner, worker = _requests(config)
        asked = config.ray.num_learners * learner.get("CPU", 0) + config.rollout.num_workers * worker.get("CPU", 0)
        # Logical CPUs are a scheduling count: a local cluster sized to what the run asks for always places it
        # (more workers than cores simply share them).
        num_cpus = config.ray.num_cpus or max(os.cpu_count() or 1, int(asked + 0.999))
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": str(config.ray.worker_threads)}})
        return True


@contextlib.contextmanager
def _signal_handlers_kept():
    """ray.init installs its own SIGTERM handler (it logs and dies): the run's (rl_lora.run.train.StopFlag, set
    before Ray starts) is put back, so SIGTERM still finishes the step and checkpoints."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if callable(handler):  # a Python handler: the run's own
                signal.signal(signum, handler)


@dataclass
class RayParts:
    learner: RemoteLearner
    pool: WorkerPool
    placement_group: object
    started_ray: bool

    def shutdown(self) -> None:
        import ray

        try:
            self.pool.close()
            for actor in self.learner.actors:
                ray.kill(actor, no_restart=True)
            ray.util.remove_placement_group(self.placement_group)
        finally:
            if self.started_ray:
                ray.shutdown()


def plan_compute(config: RunConfig) -> Compute:
    """The actors' device and dtype, as far as the driver decides them: it may run on a CPU-only head node, so it
    resolves nothing against its own hardware; each actor resolves model.device on its node (the GPU Ray granted
    it, else for auto the CPU). The dtype is one for all: the probe and the importance ratio compare the learner's
    log-probs with the samplers', and bf16 against fp32 differs by more than the probe's 1e-3. So auto is float32
    when any actor asks for no GPU; with a GPU for every actor, each resolves auto on its own (bf16 where native)
    and start() checks that they agree. The device stays as given: `auto` goes to the actors."""
    model = config.model

    def where(bundle: dict) -> str:
        if bundle.get("GPU", 0) > 0:
            return "the GPU Ray grants it"
        return "cpu (auto: no GPU asked)" if model.device == "auto" else f"{model.device} (no GPU asked)"

    learner, worker = _requests(config)
    dtype = model.dtype
    if dtype != "auto":
        said = dtype
    elif learner.get("GPU", 0) > 0 and worker.get("GPU", 0) > 0:
        said = "auto (bfloat16 where an actor's GPU has it natively, else float32)"
    else:
        dtype, said = "float32", "float32 (auto: float32 for all, as an actor without a GPU computes on a CPU)"
    return Compute(model.device, dtype, f"device per Ray actor: learner on {where(learner)}, rollout workers on "
                   f"{where(worker)}; dtype {said}")


def _check_one_dtype(learner: Compute, workers: list[Compute]) -> str:
    """The actors' own lines, once they agree on the dtype (GPUs of different kinds may not, under auto)."""
    for index, worker in enumerate(workers):
        if worker.dtype != learner.dtype:
            raise UserError(f"model.dtype=auto resolved to {learner.dtype} on the learner ({learner.device}) and "
                            f"{worker.dtype} on rollout worker {index} ({worker.device}): the learner and the "
                            "samplers must compute in one dtype (the probe and the importance ratio compare their "
                            "log-probs); set model.dtype=float32, or bfloat16 where every GPU has it")
    lines = sorted({w.line for w in workers})
    return f"learner: {learner.line}; rollout workers: {' | '.join(lines)}"


def describe_requests(config: RunConfig) -> str:
    learner, worker = _requests(config)
    learners = config.ray.num_learners
    return (f"Ray: {f'{learners} learners' if learners > 1 else 'learner'} {learner}"
            f"{' each' if learners > 1 else ''}, {config.rollout.num_workers} rollout worker(s) {worker} each, "
            f"placement {config.ray.placement}")


def start(config: RunConfig, probe: Probe | None, default_reward: str, run_name: str) -> RayParts:
    """Actors are named <run_name>/learner and <run_name>/rollout-worker-<i> (ray.get_actor finds them)."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from rl_lora.cluster.actors import LearnerWorker, RolloutWorker

    started = connect(config)
    # The actors resolve model.device on their nodes; the dtype as planned (float32 where an actor has no GPU).
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dtype=plan_compute(config).dtype))
    group, learner_actors, workers = None, [], []
    try:
        learner_bundle, worker_bundle = _requests(config)
        learners = config.ray.num_learners
        bundles = [learner_bundle] * learners + [worker_bundle] * config.rollout.num_workers
        group = placement_group(bundles, strategy="STRICT_PACK" if config.ray.placement == "colocated" else "SPREAD")
        try:
            ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            ray.util.remove_placement_group(group)
            group = None
            raise UserError(f"the Ray cluster cannot place this run within {PLACEMENT_TIMEOUT_S} s: it asks for "
                            f"{bundles} ({config.ray.placement}); the cluster has {ray.cluster_resources()}. "
                            "Lower ray.*_cpus / ray.*_gpus or rollout.num_workers, or add nodes") from None

        def on(bundle: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=bundle)

        learner_threads = max(1, int(config.ray.learner_cpus))
        learner_actors = [ray.remote(LearnerWorker).options(
            num_cpus=learner_bundle.get("CPU", 0), num_gpus=learner_bundle.get("GPU", 0), max_restarts=0,
            scheduling_strategy=on(rank), name=f"{run_name}/learner" + (f"-{rank}" if learners > 1 else "")
        ).remote(config, learner_threads) for rank in range(learners)]
        if learners > 1:
            address, port = _started("a learner actor", lambda: ray.get(learner_actors[0].rendezvous.remote()))
            _started("a learner actor", lambda: ray.get([actor.join_group.remote(address, port, rank, learners)
                                                         for rank, actor in enumerate(learner_actors)]))
        workers = [ray.remote(RolloutWorker).options(
            num_cpus=worker_bundle.get("CPU", 0), num_gpus=worker_bundle.get("GPU", 0),
            max_restarts=config.ray.max_restarts, max_task_retries=0, scheduling_strategy=on(learners + index),
            name=f"{run_name}/rollout-worker-{index}"
        ).remote(config.model, config.reward, default_reward, config.task.name, config.rollout,
                 config.ray.worker_threads, config.train.seed + index, config.engine_sleeps, config.env,
                 config.task.system_prompt)
            for index in range(config.rollout.num_workers)]
        parts = RayParts(RemoteLearner(learner_actors), _started("a rollout worker", lambda: WorkerPool(
            workers, probe, max_restarts=config.ray.max_restarts)), group, started)
        nodes = _started("a rollout worker", lambda: ray.get([w.node.remote() for w in workers]))
        print(f"placed on {len(set(nodes) | {parts.learner.node})} node(s): learner on node "
              f"{parts.learner.node[:8]}, rollout workers on " + ", ".join(n[:8] for n in nodes))
        try:
            print(_check_one_dtype(parts.learner.compute, ray.get([w.describe_compute.remote() for w in workers])))
        except UserError:
            parts.shutdown()  # the actors and, if this process started it, Ray
            raise
        return parts
    except BaseException:
        if started:
            ray.shutdown()
        else:  # a cluster that outlives this run: give back what was taken (the group reserves its bundles)
            try:
                for actor in learner_actors + workers:
                    ray.kill(actor, no_restart=True)
                if group is not None:
                    ray.util.remove_placement_group(group)
            except Exception:  # already given back (RayParts.shutdown), or the cluster is gone
                pass
        raise


def _started(what: str, call):
    """call(), with an actor that failed to start (its constructor raised, on its node) reported by its cause."""
    import ray

    try:
        return call()
    except ray.exceptions.RayActorError as error:
        raise RunStopped(f"{what} died: {describe(error)}") from None
