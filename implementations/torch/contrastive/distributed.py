"""CLIP's gathered loss and SigLIP's exchanged loss on torch.distributed itself (gloo on the CPU).

Each rank holds b = N / W consecutive pairs of the batch.

- CLIP (open_clip ``local_loss=True, gather_with_grad=True``): all-gather the normalised features with a
  gradient (the backward sums every rank's gradient for this rank's slot), then the rank's b images against all N
  texts and its b texts against all N images, labels arange(b) + b * rank.
- SigLIP (§3.1): the local b x b block with its positives, then W - 1 negative-only blocks of the other ranks' texts,
  received either around a ring ("shift") or from both neighbours at once, forwarding what was received
  ("bidir", open_clip's default: divmod(W - 1, 2) rounds, then one shift if W - 1 is odd). The exchange is an
  autograd function whose backward sends the gradients back the way the blocks came.

Every rank calls backward on its own loss; what each rank's local features then hold, divided by W (DDP's
average), is returned together with the losses.

Starting processes costs seconds (each imports torch), so one ``World`` of ``MAX_WORLD`` processes is started
once per Python process and kept: a call sends each rank its shard over a queue, the ranks run the rank function
together and send back their results. Worlds of 2 .. MAX_WORLD ranks are subgroups of it (ranks 0 .. W - 1).
"""

from __future__ import annotations

import atexit
import datetime
import queue
import socket
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from eqspec.registry import load_target
from specs.siglip import check_schedule
from specs.validators import check_pair, check_scalar, check_world

MAX_WORLD = 4
CALL_TIMEOUT_S = 120.0  # a hung collective (a broken rank function) fails the call instead of the run
_M = __name__


# ---------------------------------------------------------------------------------------------------
# Collectives with gradients
# ---------------------------------------------------------------------------------------------------

class AllGather(torch.autograd.Function):
    """all_gather whose backward gives each rank the sum over ranks of the gradients of its own slot."""

    @staticmethod
    def forward(ctx, group, x):
        ctx.group = group
        out = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(out, x.contiguous(), group=group)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        g = torch.stack(grads).contiguous()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)  # gloo has no reduce_scatter
        return None, g[dist.get_rank(ctx.group)]


def _exchange(pairs, group):
    """Post every (send tensor, to, recv tensor, from, tag) at once, then wait: no ordering deadlock."""
    reqs = []
    for send, to, recv, frm, tag in pairs:
        reqs.append(dist.isend(send.contiguous(), group=group, group_dst=to, tag=tag))
        reqs.append(dist.irecv(recv, group=group, group_src=frm, tag=tag))
    for r in reqs:
        r.wait()


class Shift(torch.autograd.Function):
    """Send a block to the right neighbour, receive the left neighbour's; the backward goes the other way."""

    @staticmethod
    def forward(ctx, group, left, right, x):
        ctx.group, ctx.left, ctx.right = group, left, right
        got = torch.empty_like(x)
        _exchange([(x, right, got, left, 1)], group)
        return got

    @staticmethod
    def backward(ctx, g):
        dx = torch.empty_like(g)
        _exchange([(g, ctx.left, dx, ctx.right, 2)], ctx.group)
        return None, None, None, dx


class ExchangeBoth(torch.autograd.Function):
    """Send one block left and one right; receive (from the right, from the left). Tags keep the two directions
    apart; the backward returns each received block's gradient to where it came from."""

    @staticmethod
    def forward(ctx, group, left, right, to_left, to_right):
        ctx.group, ctx.left, ctx.right = group, left, right
        from_right, from_left = torch.empty_like(to_left), torch.empty_like(to_right)
        _exchange([(to_left, left, from_right, right, 3), (to_right, right, from_left, left, 4)], group)
        return from_right, from_left

    @staticmethod
    def backward(ctx, g_from_right, g_from_left):
        d_to_left, d_to_right = torch.empty_like(g_from_right), torch.empty_like(g_from_left)
        _exchange([(g_from_right.contiguous(), ctx.right, d_to_left, ctx.left, 5),
                   (g_from_left.contiguous(), ctx.left, d_to_right, ctx.right, 6)], ctx.group)
        return None, None, None, d_to_left, d_to_right


# ---------------------------------------------------------------------------------------------------
# Rank functions (run in the worker processes, all ranks of the subgroup together)
# ---------------------------------------------------------------------------------------------------

_DEVICE = "cpu"  # in a worker: cuda:<rank> under NCCL (one GPU per rank)


def _leaves(*arrays):
    return [torch.from_numpy(a).to(_DEVICE).requires_grad_(True) for a in arrays]


def _numpy(x: torch.Tensor):
    return x.detach().cpu().numpy()


def clip_rank(image: np.ndarray, text: np.ndarray, logit_scale: float, *, group):
    rank, W = dist.get_rank(group), dist.get_world_size(group)
    I, T = _leaves(image, text)
    I_hat, T_hat = F.normalize(I, dim=-1), F.normalize(T, dim=-1)
    all_I, all_T = torch.cat(AllGather.apply(group, I_hat)), torch.cat(AllGather.apply(group, T_hat))
    s = torch.tensor(logit_scale, dtype=I.dtype, device=I.device).exp()
    b = I.shape[0]
    y = torch.arange(b, device=I.device) + b * rank
    loss = (F.cross_entropy(s * I_hat @ all_T.T, y) + F.cross_entropy(s * T_hat @ all_I.T, y)) / 2
    loss.backward()
    return _numpy(loss), _numpy(I.grad / W), _numpy(T.grad / W), None


def _siglip_block(x_hat, y_hat, t, b, positives: bool):
    L = t * x_hat @ y_hat.T + b
    if not positives:
        return -F.logsigmoid(-L).sum()
    z = 2 * torch.eye(L.shape[0], dtype=L.dtype, device=L.device) - 1
    return -F.logsigmoid(z * L).sum()


def siglip_rank(image: np.ndarray, text: np.ndarray, t_prime: float, bias: float, schedule: str, *, group):
    rank, W = dist.get_rank(group), dist.get_world_size(group)
    left, right = (rank - 1) % W, (rank + 1) % W
    x, y = _leaves(image, text)
    x_hat, y_hat = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    t, b = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (t_prime, bias))
    t = t.exp()
    loss = _siglip_block(x_hat, y_hat, t, b, positives=True)
    # each block travels with its origin rank in an extra column (a constant: no gradient), so that which rank's
    # texts a rank received is read off the block, not guessed from its contents (duplicate texts are valid input)
    tagged = torch.cat([y_hat, torch.full((y_hat.shape[0], 1), float(rank), dtype=y_hat.dtype, device=y_hat.device)], 1)
    received = []
    if schedule == "bidir":
        to_left = to_right = tagged
        rounds, remainder = divmod(W - 1, 2)
        for _ in range(rounds):
            from_right, from_left = ExchangeBoth.apply(group, left, right, to_left, to_right)
            received += [from_right, from_left]
            to_left, to_right = from_right, from_left  # forward what arrived: next round reaches d +- (k + 1)
        if remainder:
            received.append(Shift.apply(group, left, right, to_right))
    else:
        to_right = tagged
        for _ in range(W - 1):
            to_right = Shift.apply(group, left, right, to_right)
            received.append(to_right)
    for block in received:
        loss = loss + _siglip_block(x_hat, block[:, :-1], t, b, positives=False)
    loss = loss / x.shape[0]
    loss.backward()
    origins = np.array([int(round(float(blk[0, -1]))) for blk in received], dtype=np.int64)
    return _numpy(loss), _numpy(x.grad / W), _numpy(y.grad / W), origins


# ---------------------------------------------------------------------------------------------------
# The world of worker processes
# ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(rank: int, size: int, port: int, backend: str, inbox, outbox) -> None:
    global _DEVICE
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
        _DEVICE = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=CALL_TIMEOUT_S / 2))
    groups = {w: dist.new_group(list(range(w))) for w in range(2, size)}  # every rank creates every subgroup
    groups[size] = dist.group.WORLD
    outbox.put((rank, True, "ready"))
    while (message := inbox.get()) is not None:
        target, w, args = message
        try:
            outbox.put((rank, True, load_target(target)(*args, group=groups[w])))
        except Exception:
            outbox.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class World:
    """`size` processes in one process group (gloo on the CPU, NCCL with one GPU per rank), kept for the life of
    this Python process."""

    def __init__(self, size: int = MAX_WORLD, backend: str = "gloo"):
        ctx = mp.get_context("spawn")
        port = _free_port()
        self.size = size
        self.inboxes = [ctx.Queue() for _ in range(size)]
        self.outbox = ctx.Queue()
        self.procs = [ctx.Process(target=_serve, args=(r, size, port, backend, self.inboxes[r], self.outbox),
                                  daemon=True) for r in range(size)]
        for p in self.procs:
            p.start()
        self._collect(size, "starting the process group")

    def _collect(self, count: int, what: str) -> list:
        results: dict[int, object] = {}
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while len(results) < count:
            try:
                rank, ok, payload = self.outbox.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(self.procs) if not p.is_alive()]
                if dead or time.monotonic() > deadline:
                    self.close()
                    why = f"ranks {dead} exited" if dead else f"no answer within {CALL_TIMEOUT_S:g} s"
                    raise RuntimeError(f"gloo world: {why} while {what} (waiting for ranks "
                                       f"{sorted(set(range(count)) - set(results))})") from None
                continue
            if not ok:
                self.close()
                raise RuntimeError(f"gloo world: rank {rank} failed while {what}:\n{payload}")
            results[rank] = payload
        return [results[r] for r in range(count)]

    def run(self, target: str, world_size: int, per_rank_args: list[tuple]) -> list:
        for r in range(world_size):
            self.inboxes[r].put((target, world_size, per_rank_args[r]))
        return self._collect(world_size, f"running {target} on {world_size} ranks")

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self) -> None:
        for box, p in zip(self.inboxes, self.procs):
            if p.is_alive():
                box.put(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


_WORLDS: dict[str, World] = {}


def world(backend: str = "gloo") -> World:
    current = _WORLDS.get(backend)
    if current is None or not current.alive:
        size = MAX_WORLD if backend == "gloo" else min(MAX_WORLD, torch.cuda.device_count())
        current = _WORLDS[backend] = World(size, backend)
        atexit.register(current.close)
    return current


def run_sharded(target: str, image_features, text_features, world_size: int, extra: tuple):
    """Split the batch over world_size ranks, run `target` on them, reassemble (losses, d_image, d_text, ...)."""
    N, _ = check_pair(image_features, text_features)
    W = check_world(N, world_size)
    backend = "nccl" if image_features.is_cuda else "gloo"
    most = MAX_WORLD if backend == "gloo" else min(MAX_WORLD, torch.cuda.device_count())
    if not 2 <= W <= most:
        raise ArgumentError("world_size", f"world_size must be in [2, {most}] for the {backend} world, got {W}")
    b = N // W
    shard = lambda x, r: x.detach().cpu()[r * b:(r + 1) * b].contiguous().numpy()  # noqa: E731
    results = world(backend).run(target, W, [(shard(image_features, r), shard(text_features, r), *extra)
                                              for r in range(W)])
    like = dict(dtype=image_features.dtype, device=image_features.device)
    losses = torch.tensor(np.stack([r[0] for r in results]), **like)
    d_image = torch.cat([torch.from_numpy(r[1]) for r in results]).to(**like)
    d_text = torch.cat([torch.from_numpy(r[2]) for r in results]).to(**like)
    return losses, d_image, d_text, [r[3] for r in results]


def visits_from_origins(world_size: int, origins: list) -> torch.Tensor:
    """visits[r, k]: the rank whose text block rank r received k-th (each block carried its origin)."""
    return torch.from_numpy(np.stack(origins)).to(torch.int64).reshape(world_size, world_size - 1)


def clip_sharded_loss(image_features, text_features, logit_scale, *, world_size: int):
    s = float(check_scalar("logit_scale", logit_scale))
    losses, d_image, d_text, _ = run_sharded(f"{_M}:clip_rank", image_features, text_features, world_size, (s,))
    return losses, d_image, d_text


def siglip_sharded_loss(image_features, text_features, t_prime, bias, *, world_size: int, schedule: str = "bidir"):
    tp, b = float(check_scalar("t_prime", t_prime)), float(check_scalar("bias", bias))
    losses, d_image, d_text, origins = run_sharded(f"{_M}:siglip_rank", image_features, text_features, world_size,
                                                   (tp, b, check_schedule(schedule)))
    return losses, d_image, d_text, visits_from_origins(world_size, origins)
