"""A scalar automatic-differentiation engine: backpropagation in about a hundred lines.

Chapter 01 builds this class cell by cell. A :class:`Value` wraps one Python float. Every
operation on values returns a new value that remembers its inputs (``_prev``), the operation
that made it (``_op``) and a closure ``_backward`` that applies the *local* chain rule: given
``out.grad`` (d loss / d out), it adds d loss / d input to each input's ``grad``.
:meth:`Value.backward` orders the graph topologically and runs those closures from the output
back to the leaves.

>>> a, b = Value(2.0), Value(-3.0)
>>> c = a * b + a  # c = ab + a, so dc/da = b + 1 and dc/db = a
>>> c.backward()
>>> a.grad, b.grad
(-2.0, 2.0)

:func:`trace` lists the nodes and edges of a graph; :func:`draw_graph` plots it with matplotlib.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

Number = int | float


class Value:
    """One scalar in a computational graph, with its gradient (chapter 01 builds this by hand)."""

    def __init__(self, data: Number, _children: Iterable[Value] = (), _op: str = "", label: str = ""):
        if isinstance(data, Value):
            raise TypeError("Value(data) expects a Python number, got a Value; use the Value itself")
        self.data = float(data)
        self.grad = 0.0  # d(output)/d(self), filled in by backward()
        self._backward: Callable[[], None] = lambda: None  # leaves have nothing to propagate
        self._prev = tuple(_children)  # the inputs of the operation that made this value
        self._op = _op  # that operation's name, for printing and drawing
        self.label = label

    # ---- binary operations -------------------------------------------------------------
    def __add__(self, other: Value | Number) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():  # d(a + b)/da = 1, d(a + b)/db = 1: the gradient is copied
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | Number) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():  # d(a * b)/da = b, d(a * b)/db = a: the gradient is swapped and scaled
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: Number) -> Value:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            raise TypeError(f"Value ** k supports a constant int or float exponent, got {type(k).__name__}")
        out = Value(self.data**k, (self,), f"**{k:g}")

        def _backward():  # d(a^k)/da = k a^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    # ---- unary operations --------------------------------------------------------------
    def tanh(self) -> Value:
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():  # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += (1.0 - t * t) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        out = Value(self.data if self.data > 0 else 0.0, (self,), "relu")

        def _backward():  # 1 where the input was positive, 0 elsewhere (0 at the kink too)
            self.grad += (1.0 if self.data > 0 else 0.0) * out.grad

        out._backward = _backward
        return out

    def exp(self) -> Value:
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():  # d e^a/da = e^a, which is out.data
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log expects a positive value, got {self.data}")
        out = Value(math.log(self.data), (self,), "log")

        def _backward():  # d log(a)/da = 1/a
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def sigmoid(self) -> Value:
        s = (
            1.0 / (1.0 + math.exp(-self.data))
            if self.data >= 0
            else math.exp(self.data) / (1.0 + math.exp(self.data))
        )
        out = Value(s, (self,), "sigmoid")

        def _backward():  # d sigma(a)/da = sigma(a) (1 - sigma(a)), at most 1/4
            self.grad += s * (1.0 - s) * out.grad

        out._backward = _backward
        return out

    # ---- backpropagation ---------------------------------------------------------------
    def backward(self) -> None:
        """Fill ``grad`` of every value this one depends on with d(self)/d(value).

        Gradients accumulate (``+=``), as in PyTorch: build a fresh graph, or set ``grad = 0``
        on the leaves, before calling ``backward`` again.
        """
        topo = topological_order(self)
        self.grad = 1.0  # d(self)/d(self)
        for node in reversed(topo):  # every node is visited after all the nodes that use it
            node._backward()

    # ---- the rest is arithmetic sugar built from the operations above -------------------
    def __neg__(self) -> Value:
        return self * -1

    def __sub__(self, other: Value | Number) -> Value:
        return self + (-other)

    def __truediv__(self, other: Value | Number) -> Value:
        return self * other**-1

    def __radd__(self, other: Number) -> Value:
        return self + other

    def __rsub__(self, other: Number) -> Value:
        return other + (-self)

    def __rmul__(self, other: Number) -> Value:
        return self * other

    def __rtruediv__(self, other: Number) -> Value:
        return other * self**-1

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data:.4g}, grad={self.grad:.4g})"


def topological_order(root: Value) -> list[Value]:
    """The values ``root`` depends on, each listed after all of its inputs (root last).

    Iterative depth-first search, so deep graphs do not hit Python's recursion limit.
    """
    order: list[Value] = []
    visited: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node._prev) if id(child) not in visited)
    return order


def trace(root: Value) -> tuple[list[Value], list[tuple[Value, Value]]]:
    """Nodes (in topological order) and edges ``(input, output)`` of the graph that made ``root``."""
    nodes = topological_order(root)
    edges = [(child, node) for node in nodes for child in dict.fromkeys(node._prev)]
    return nodes, edges


def draw_graph(root: Value, *, ax=None, show_grad: bool = True, figsize: tuple[float, float] | None = None):
    """Draw the computational graph of ``root`` with matplotlib and return the Figure.

    Each value is a box (label, data and grad); the operation that made it is a circle just to
    its left. Columns are the distance to the output (the output on the right, the leaves on the
    left), and each column is ordered by where its consumers are, which keeps edges short.
    Chapter 01 uses this figure to follow the backward pass.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    nodes, edges = trace(root)
    consumers: dict[int, list[Value]] = {id(n): [] for n in nodes}
    for child, parent in edges:
        consumers[id(child)].append(parent)

    # rank = longest path to the output; the output is rank 0 and lies in the right-most column.
    rank: dict[int, int] = {id(root): 0}
    for node in reversed(nodes):
        for child in node._prev:
            rank[id(child)] = max(rank.get(id(child), 0), rank[id(node)] + 1)
    depth = max(rank.values())
    columns: dict[int, list[Value]] = {}
    for node in reversed(nodes):
        columns.setdefault(rank[id(node)], []).append(node)

    pos: dict[int, tuple[float, float]] = {}
    for r in range(depth + 1):
        col = columns.get(r, [])
        if r > 0:  # top to bottom in the order of the consumers' mean height (already placed)
            col.sort(key=lambda n: -sum(pos[id(p)][1] for p in consumers[id(n)]) / len(consumers[id(n)]))
        for i, node in enumerate(col):
            pos[id(node)] = (2.0 * (depth - r), (len(col) - 1) / 2.0 - i)

    if ax is None:
        rows = max(len(c) for c in columns.values())
        fig, ax = plt.subplots(figsize=figsize or (max(4.0, 2.2 * (depth + 1)), max(2.0, 1.1 * rows + 0.6)))
    else:
        fig = ax.figure
    box_w, box_h, op_dx = 1.0, 0.62, 0.62
    arrow = dict(arrowstyle="-|>", color="0.35", lw=1.0, shrinkA=0, shrinkB=0)
    for node in nodes:
        x, y = pos[id(node)]
        text = (f"{node.label}\n" if node.label else "") + f"data {node.data:.3g}"
        if show_grad:
            text += f"\ngrad {node.grad:.3g}"
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02",
                fc="#e8f0fb" if node._prev else "#fdf2d6",
                ec="0.3",
                lw=1.0,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
        if node._prev:  # the operation node sits left of the value it produced
            ox = x - box_w / 2 - op_dx
            ax.add_patch(plt.Circle((ox, y), 0.2, fc="white", ec="0.3", lw=1.0))
            ax.text(ox, y, node._op, ha="center", va="center", fontsize=7 if len(node._op) > 2 else 9)
            ax.annotate("", xy=(x - box_w / 2, y), xytext=(ox + 0.2, y), arrowprops=arrow)
    for child, parent in edges:
        (cx, cy), (px, py) = pos[id(child)], pos[id(parent)]
        ox = px - box_w / 2 - op_dx
        ax.annotate("", xy=(ox - 0.2, py), xytext=(cx + box_w / 2, cy), arrowprops=arrow)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - box_w / 2 - op_dx - 0.4, max(xs) + box_w / 2 + 0.1)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


__all__ = ["Value", "draw_graph", "topological_order", "trace"]
