"""The training step of a Mixer block on the CPU: one autograd Function whose big buffers the model keeps.

A training step of B/16 at batch 16 allocates about 1 GB of activations and gradients. PyTorch's CPU
allocator hands each buffer over 32 MB to ``mmap`` and back to the kernel when freed, so every step page-faults
all of it again: 0.7-1.2 GB of minor faults, about 1.5 s of timm's 8.1-8.5 s step on a 2-core EPYC (the same
step runs in 6.8 s with glibc told to keep its memory). Here the block takes those buffers from a
:class:`BufferPool` that keeps them between steps, and writes every large result into them with ``out=``. The
arithmetic is timm's, op for op (LayerNorm, GEMMs, GELU and their ATen backward kernels), so the gradients
agree with timm's to rounding.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

_LAYER_NORM_GRADS = [True, True, True]


class BufferPool:
    """Storages the blocks of a model reuse from one training step (or eager inference call) to the next.

    A storage is handed out only while nothing else refers to it: every tensor the pool hands out is a new
    tensor over one of its storages, and the pool counts the references to each storage (its own is the
    only one when free). So a buffer still saved for a backward that has not run, kept by the caller, or
    stolen into ``.grad`` is never written; the pool allocates a fresh one instead.
    One pool serves all blocks of a model, so block k-1's backward takes the activations block k's backward
    has just freed (one pool per block held about 1.7x timm's peak for S/32). A step is counted when the
    first block to ask (the model's first) starts its forward; storages not asked for in the last two steps
    (another batch size) are dropped, and :meth:`clear` drops all (``model.eval()`` does, so inference keeps
    no training memory; it then pools its own, smaller buffers).
    """

    def __init__(self) -> None:
        self._storages: Dict[Tuple[int, str], List[List[Any]]] = {}  # (nbytes, device) -> [[storage, step]]
        self._step = 0
        self._leader: Optional[int] = None  # id() of the block whose forward starts a step
        self._lock = threading.Lock()  # two threads must not both take the one free storage

    def new_step(self, block: object) -> None:
        """``block`` starts its forward; if it leads (it asked first), a step begins: storages that no
        request matched in the last two steps are forgotten."""
        with self._lock:
            if self._leader is None:
                self._leader = id(block)
            if self._leader != id(block):
                return
            self._step += 1
            self._drop_unused()

    def _drop_unused(self) -> None:
        for key, entries in list(self._storages.items()):
            kept = [e for e in entries if e[1] >= self._step - 2 or not self._is_free(e[0])]
            if kept:
                self._storages[key] = kept
            else:
                del self._storages[key]

    @staticmethod
    def _is_free(storage: torch.UntypedStorage) -> bool:
        return torch._C._storage_Use_Count(storage._cdata) == 1

    def empty(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` with ``like``'s dtype and device."""
        nbytes = like.element_size()
        for size in shape:
            nbytes *= size
        with self._lock:
            entries = self._storages.setdefault((nbytes, str(like.device)), [])
            for entry in entries:
                if self._is_free(entry[0]):
                    entry[1] = self._step
                    return like.new_empty(0).set_(entry[0], 0, tuple(shape))
            storage = torch.UntypedStorage(nbytes, device=like.device)
            entries.append([storage, self._step])
            return like.new_empty(0).set_(storage, 0, tuple(shape))

    def clear(self) -> None:
        with self._lock:
            self._storages.clear()
            self._leader = None

    def nbytes(self) -> int:
        """Bytes the pool holds (free or in use)."""
        return sum(key[0] * len(entries) for key, entries in self._storages.items())

    def __deepcopy__(self, memo: dict) -> "BufferPool":
        return BufferPool()  # a copy (timm's EMA deep-copies the model) starts empty

    def __getstate__(self) -> dict:
        return {}  # pickled models carry no buffers

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim into ``out``; returns the mean and 1/std its backward needs."""
    stats = x.shape[:-1] + (1,)
    mean, rstd = x.new_empty(stats), x.new_empty(stats)
    torch.ops.aten.native_layer_norm.out(x, [x.shape[-1]], weight, bias, eps, out0=out, out1=mean, out2=rstd)
    return mean, rstd


class MixerBlockTraining(torch.autograd.Function):
    """``x -> x + drop(token_mlp(LN1 x)) -> that + drop(channel_mlp(LN2 .))`` with a hand-written backward.

    Token mixing is ``W @ x`` batched over the images, as in inference, so no transposed copy is made in
    either direction; its weight gradients are per-image GEMMs summed. ``keep1``/``keep2`` are stochastic
    depth's per-image scales (None when off).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep1: Optional[torch.Tensor], keep2: Optional[torch.Tensor],
                pool: BufferPool, approximate: str, eps: float, *params: torch.Tensor) -> torch.Tensor:
        n1w, n1b, w1, b1, w2, b2, n2w, n2b, w3, b3, w4, b4 = params
        x = x.contiguous()
        b, n, c = x.shape
        t, hidden, rows = w1.shape[0], w3.shape[0], x.shape[0] * x.shape[1]

        a = pool.empty((b, n, c), x)
        mean1, rstd1 = _layer_norm(x, n1w, n1b, eps, a)
        u = torch.baddbmm(b1.view(1, t, 1), w1.expand(b, t, n), a, out=pool.empty((b, t, c), x))
        g = torch.ops.aten.gelu.out(u, approximate=approximate, out=pool.empty((b, t, c), x))
        x1 = pool.empty((b, n, c), x)
        if keep1 is None:
            torch.baddbmm(x, w2.expand(b, n, t), g, out=x1).add_(b2.view(1, n, 1))
        else:
            torch.baddbmm(b2.view(1, n, 1), w2.expand(b, n, t), g, out=x1).mul_(keep1).add_(x)

        a2 = pool.empty((rows, c), x)
        mean2, rstd2 = _layer_norm(x1.view(rows, c), n2w, n2b, eps, a2)
        v = torch.addmm(b3, a2, w3.t(), out=pool.empty((rows, hidden), x))
        g2 = torch.ops.aten.gelu.out(v, approximate=approximate, out=pool.empty((rows, hidden), x))
        x2 = pool.empty((b, n, c), x)
        if keep2 is None:
            torch.addmm(x1.view(rows, c), g2, w4.t(), out=x2.view(rows, c)).add_(b4)
        else:
            torch.addmm(b4, g2, w4.t(), out=x2.view(rows, c))
            x2.mul_(keep2).add_(x1)

        ctx.save_for_backward(x, mean1, rstd1, a, u, g, x1, mean2, rstd2, a2, v, g2, keep1, keep2, *params)
        ctx.pool, ctx.approximate = pool, approximate
        return x2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dx2: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        (x, mean1, rstd1, a, u, g, x1, mean2, rstd2, a2, v, g2, keep1, keep2,
         n1w, n1b, w1, b1, w2, b2, n2w, n2b, w3, b3, w4, b4) = ctx.saved_tensors
        pool, approximate, need = ctx.pool, ctx.approximate, ctx.needs_input_grad[6:]
        b, n, c = x.shape
        t, hidden, rows = w1.shape[0], w3.shape[0], b * n
        dx2 = dx2.contiguous()

        # channel mixing
        dy2 = dx2.view(rows, c) if keep2 is None else (dx2 * keep2).view(rows, c)
        dw4 = dy2.t().mm(g2) if need[10] else None
        db4 = dy2.sum(0) if need[11] else None
        dv = torch.mm(dy2, w4, out=pool.empty((rows, hidden), x))
        torch.ops.aten.gelu_backward.grad_input(dv, v, approximate=approximate, grad_input=dv)
        dw3 = dv.t().mm(a2) if need[8] else None
        db3 = dv.sum(0) if need[9] else None
        da2 = torch.mm(dv, w3, out=pool.empty((rows, c), x))
        dx1 = pool.empty((b, n, c), x)
        dn2w, dn2b = n2w.new_empty(c), n2b.new_empty(c)
        torch.ops.aten.native_layer_norm_backward.out(da2, x1.view(rows, c), [c], mean2, rstd2, n2w, n2b,
                                                      _LAYER_NORM_GRADS, out0=dx1.view(rows, c), out1=dn2w,
                                                      out2=dn2b)
        dx1.add_(dx2)

        # token mixing
        dy1 = dx1 if keep1 is None else dx1 * keep1
        dw2 = torch.bmm(dy1, g.transpose(1, 2)).sum(0) if need[4] else None
        db2 = dy1.sum((0, 2)) if need[5] else None
        du = torch.bmm(w2.t().expand(b, t, n), dy1, out=pool.empty((b, t, c), x))
        torch.ops.aten.gelu_backward.grad_input(du, u, approximate=approximate, grad_input=du)
        dw1 = torch.bmm(du, a.transpose(1, 2)).sum(0) if need[2] else None
        db1 = du.sum((0, 2)) if need[3] else None
        da = torch.bmm(w1.t().expand(b, n, t), du, out=pool.empty((b, n, c), x))
        dx = pool.empty((b, n, c), x)
        dn1w, dn1b = n1w.new_empty(c), n1b.new_empty(c)
        torch.ops.aten.native_layer_norm_backward.out(da, x, [c], mean1, rstd1, n1w, n1b, _LAYER_NORM_GRADS,
                                                      out0=dx, out1=dn1w, out2=dn1b)
        dx.add_(dx1)
        return (dx, None, None, None, None, None, dn1w, dn1b, dw1, db1, dw2, db2, dn2w, dn2b, dw3, db3, dw4, db4)
