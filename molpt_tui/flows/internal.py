"""Internal coordinates (a Z-matrix) built automatically from a molecule's bond graph.

z-vector (``ICRepresentation.layout``)
    One token per atom that owns at least one dim, in ``atom_order`` (root0 owns none;
    root1 owns its bond r(1-0) unless that bond is fixed). Slots: 0 = bond, 1 = angle,
    2 = torsion, so a token may have holes (a fixed bond leaves slot 0 empty).
    Bonds and angles are standardised, ``z = (q - mean) / std``; torsions stay angles on
    the circle [-pi, pi) (kind 'torsion', the only periodic kind).

Volume element (the log-determinant)
    Write x = R x_c(q) + t with t the position of root0, R a rotation and x_c the molecule
    in the canonical frame (root0 at the origin, root1 on +x, root2 in the xy-plane, y > 0).
    Root1 sits at distance r(1-0) from root0 in the direction R e_x: spherical coordinates,
    r1^2 dr1 dOmega. Root2 sits at distance r(2-1) from root1 at polar angle theta(2-1-0)
    from the axis root1->root0, its azimuth about that axis being the last rotational
    freedom: r2^2 sin(theta2) dr2 dtheta2 dpsi. Every later atom a is placed by NeRF at
    distance r from b, polar angle theta = angle(a, b, c) from the axis b->c, azimuth
    phi = dihedral(d, c, b, a): r^2 sin(theta) dr dtheta dphi. dOmega dpsi is the Haar
    measure of SO(3) (total mass 8 pi^2), d^3t the translation, so

        dx = Haar(R) d^3t * r1^2 * prod_{atoms a after root1} r_a^2 |sin theta_a|  dq,

    and with dq = prod(std) dz over the standardised dims,

        log|det dx_reduced/dz| = sum log std + sum_a 2 log r_a + sum_{a != root1} log|sin theta_a|.

    ``forward`` returns minus this (evaluated on the same q), so the two directions are exact
    negatives of each other.

Fixed bonds
    A bond in ``fixed_bonds`` is held at the mean length seen by ``fit`` and is not a dim. The
    log-det then describes the measure obtained by conditioning Lebesgue measure on that bond
    length (its r^2 factor is kept as a constant; it cancels in flow-swap acceptance anyway).
    This is the measure of stiff-spring bonds; RATTLE-constrained MD samples the surface
    measure instead, which differs by a weak, angle-dependent Gram-determinant factor that is
    not modelled here.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from ..errors import UserError
from .base import Transform
from .layout import Layout

__all__ = [
    "ICRepresentation",
    "TopologyError",
    "ZMatrix",
    "bond_angle",
    "build_zmatrix",
    "choose_reference_atoms",
    "dihedral",
    "wrap_angle",
]

TWO_PI = 2.0 * math.pi
# Below this many atoms exact eccentricities (one BFS per atom) are cheap; above it the centre
# comes from a double BFS sweep, which is exact on trees and close on ring systems.
_EXACT_CENTRE_MAX_ATOMS = 1500
# A standard deviation this small would turn z into noise amplification, not information.
_MIN_STD = 1e-6


class TopologyError(UserError, ValueError):
    """The bond graph cannot give a Z-matrix (too few atoms, disconnected, bad indices)."""


class FittedRepresentation(Transform):
    """What the coordinate representations share: statistics fitted on training data that
    travel in the state_dict, and integer topology buffers (atom order, reference atoms) that a
    loaded state_dict must reproduce, so a checkpoint of another molecule is refused.

    Subclasses register their buffers, then call ``_freeze_topology()`` last in ``__init__``.
    """

    n_atoms: int
    layout: Layout
    dim: int
    z_mean: Tensor
    z_std: Tensor
    fitted: Tensor

    def _freeze_topology(self) -> None:
        self.register_buffer("fitted", torch.tensor(False))
        self._is_fitted = False
        self._reference = {k: v.clone() for k, v in self._buffers.items() if v is not None and v.dtype == torch.long}
        # torch leaves this hook registration unannotated
        self.register_load_state_dict_post_hook(FittedRepresentation._after_load)  # type: ignore[no-untyped-call]

    @staticmethod
    def _after_load(module: FittedRepresentation, incompatible_keys: object) -> None:
        for name, ref in module._reference.items():
            if not torch.equal(getattr(module, name).cpu(), ref):
                raise TopologyError(
                    f"state_dict buffer '{name}' does not match this {type(module).__name__}: the "
                    "checkpoint was built from a different topology or fixed-bond set"
                )
        module._is_fitted = bool(module.fitted)

    def _check_fitted(self) -> None:
        if not self._is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x_train) or load a fitted state_dict")

    def _fit_input(self, x: object) -> Tensor:
        """x [M, N, 3] as float64 on the buffers' device, or a ValueError naming the shape."""
        x = torch.as_tensor(x)
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"fit expects x of shape [M, {self.n_atoms}, 3], got {tuple(x.shape)}")
        return x.to(device=self.z_mean.device, dtype=torch.float64)

    def _mark_fitted(self) -> None:
        self.fitted.fill_(True)
        self._is_fitted = True


def wrap_angle(a: Tensor) -> Tensor:
    """Map angles to [-pi, pi)."""
    out = torch.remainder(a + math.pi, TWO_PI) - math.pi
    # remainder() can round up to exactly 2*pi for tiny negative arguments, landing on +pi.
    return torch.where(out >= math.pi, out - TWO_PI, out)


def bond_angle(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Angle a-b-c at b, in [0, pi]."""
    u, v = a - b, c - b
    # atan2 of |u x v| and u.v keeps full precision near 0 and pi, where acos loses it.
    return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1), (u * v).sum(-1))


def dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    """IUPAC dihedral p0-p1-p2-p3 in [-pi, pi], the azimuth used by NeRF placement of p3."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b1, b2)
    n2 = torch.linalg.cross(b2, b3)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return torch.atan2(y, x)


def _nerf(pd: Tensor, pc: Tensor, pb: Tensor, r: Tensor, theta: Tensor, phi: Tensor) -> Tensor:
    """Place a at distance r from b, angle(a, b, c) = theta, dihedral(d, c, b, a) = phi."""
    bc = pb - pc
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.linalg.cross(pc - pd, bc)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc)
    rs = r * torch.sin(theta)
    placed: Tensor = (
        pb
        + (-r * torch.cos(theta)).unsqueeze(-1) * bc
        + (rs * torch.cos(phi)).unsqueeze(-1) * m
        + (rs * torch.sin(phi)).unsqueeze(-1) * n
    )
    return placed


# ----------------------------------------------------------------------------- graph helpers


def _is_hydrogen(element: object) -> bool:
    return str(element).strip().upper() in ("H", "D", "HYDROGEN", "DEUTERIUM")


def _adjacency(n_atoms: int, bonds: Iterable[tuple[int, int]]) -> list[list[int]]:
    nbrs: list[set[int]] = [set() for _ in range(n_atoms)]
    for bond in bonds:
        i, j = (int(v) for v in bond)
        if not (0 <= i < n_atoms and 0 <= j < n_atoms):
            raise TopologyError(f"bond ({i}, {j}) refers to an atom outside 0..{n_atoms - 1}")
        if i == j:
            raise TopologyError(f"bond ({i}, {j}) joins an atom to itself")
        nbrs[i].add(j)
        nbrs[j].add(i)
    return [sorted(s) for s in nbrs]


def _bfs(adj: Sequence[Sequence[int]], src: int, allowed: Sequence[bool] | None = None) -> list[int]:
    dist = [-1] * len(adj)
    dist[src] = 0
    queue = deque([src])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] < 0 and (allowed is None or allowed[v]):
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def _components(adj: Sequence[Sequence[int]]) -> list[list[int]]:
    seen = [False] * len(adj)
    comps = []
    for s in range(len(adj)):
        if seen[s]:
            continue
        comp = [i for i, d in enumerate(_bfs(adj, s)) if d >= 0]
        for i in comp:
            seen[i] = True
        comps.append(comp)
    return comps


def _centrality(adj: Sequence[Sequence[int]], nodes: list[int], allowed: list[bool]) -> dict[int, int]:
    """Lower is more central: eccentricity, or distance from a double-sweep centre when large."""
    if len(nodes) <= _EXACT_CENTRE_MAX_ATOMS:
        return {u: max(d for d in _bfs(adj, u, allowed) if d >= 0) for u in nodes}
    d0 = _bfs(adj, nodes[0], allowed)
    u = max(nodes, key=lambda i: (d0[i], -i))
    du = _bfs(adj, u, allowed)
    v = max(nodes, key=lambda i: (du[i], -i))
    dv = _bfs(adj, v, allowed)
    diameter = du[v]
    # Middle of a longest path: on it du + dv == diameter and du is half the diameter.
    mid = min((i for i in nodes if du[i] + dv[i] == diameter), key=lambda i: (abs(2 * du[i] - diameter), i))
    dm = _bfs(adj, mid, allowed)
    return {i: dm[i] for i in nodes}


def choose_reference_atoms(adj: Sequence[Sequence[int]], heavy: Sequence[bool]) -> tuple[int, int, int]:
    """Three bonded atoms r0-r1-r2 near the graph centre, heavy atoms when the graph allows.

    Centrality is measured on the heavy-atom graph (hydrogens only lengthen every path by one
    and would not move the centre). r1 is the most central atom with two neighbours in that
    graph (ties: more heavy neighbours, lower index); r0 and r2 are its two most central
    neighbours. The input graph must be connected.
    """
    n = len(adj)
    heavy_nodes = [i for i in range(n) if heavy[i]]
    use_heavy = False
    if heavy_nodes:
        d = _bfs(adj, heavy_nodes[0], heavy)
        use_heavy = all(d[i] >= 0 for i in heavy_nodes) and any(
            sum(heavy[j] for j in adj[i]) >= 2 for i in heavy_nodes
        )
    allowed = list(heavy) if use_heavy else [True] * n
    nodes = heavy_nodes if use_heavy else list(range(n))
    sub = [[j for j in adj[i] if allowed[j]] for i in range(n)]
    score = _centrality(adj, nodes, allowed)
    hub_candidates = [i for i in nodes if len(sub[i]) >= 2]
    if not hub_candidates:
        raise TopologyError("no atom has two bonded neighbours; a Z-matrix needs a bonded chain of 3 atoms")
    n_heavy_nbrs = [sum(heavy[j] for j in adj[i]) for i in range(n)]
    r1 = min(hub_candidates, key=lambda i: (score[i], -n_heavy_nbrs[i], i))
    # Branched neighbours first: their other substituents then get narrow improper torsions.
    r0, r2 = sorted(sub[r1], key=lambda j: (not heavy[j], score[j], -n_heavy_nbrs[j], j))[:2]
    return r0, r1, r2


@dataclass(frozen=True)
class ZMatrix:
    """roots = (r0, r1, r2); rows = (a, b, c, d) for every other atom, in atom order.

    Atom a is placed at bond r(a, b), angle theta(a, b, c), dihedral phi(d, c, b, a); rows are
    sorted by placement depth so that each depth is one contiguous, vectorised NeRF step.
    """

    n_atoms: int
    roots: tuple[int, int, int]
    rows: tuple[tuple[int, int, int, int], ...]
    level_bounds: tuple[int, ...]  # rows[level_bounds[k]:level_bounds[k+1]] share a depth

    @property
    def atom_order(self) -> tuple[int, ...]:
        return self.roots + tuple(r[0] for r in self.rows)


def build_zmatrix(n_atoms: int, bonds: Iterable[tuple[int, int]], elements: Sequence[str]) -> ZMatrix:
    """Z-matrix from a bond graph (see ``ICRepresentation.from_topology`` for the rules)."""
    n_atoms = int(n_atoms)
    if n_atoms < 3:
        raise TopologyError(f"internal coordinates need at least 3 atoms, got {n_atoms}")
    if len(elements) != n_atoms:
        raise TopologyError(f"got {len(elements)} elements for {n_atoms} atoms")
    adj = _adjacency(n_atoms, bonds)
    comps = _components(adj)
    if len(comps) > 1:
        comps.sort(key=len, reverse=True)
        stray = ", ".join(str(c[:8])[1:-1] + (" ..." if len(c) > 8 else "") for c in comps[1:4])
        raise TopologyError(
            f"bond graph is disconnected: {len(comps)} fragments (largest {len(comps[0])} atoms; "
            f"others contain atoms {stray}{' ...' if len(comps) > 4 else ''}). Internal coordinates "
            "need one molecule: strip solvent/ions or add the missing bonds (PDB CONECT records)"
        )
    heavy = [not _is_hydrogen(e) for e in elements]
    r0, r1, r2 = choose_reference_atoms(adj, heavy)
    dist = _bfs(adj, r1)

    parent = {r0: r1, r1: r0, r2: r1}
    rank = {r0: 0, r1: 1, r2: 2}
    placed_rows: list[tuple[int, int, int, int]] = []

    def ref_key(j: int) -> tuple[bool, int, int]:
        return (not heavy[j], dist[j], rank[j])

    # Heavy atoms first, outwards from the centre, so that every heavy atom is referenced to
    # heavy atoms and hydrogens only ever hang off the finished heavy skeleton.
    heap: list[tuple[bool, int, int]] = []
    queued = {r0, r1, r2}
    for root in (r0, r1, r2):
        for v in adj[root]:
            if v not in queued:
                queued.add(v)
                heapq.heappush(heap, (not heavy[v], dist[v], v))
    while heap:
        _, _, a = heapq.heappop(heap)
        b = min((j for j in adj[a] if j in rank), key=ref_key)
        c = parent[b]
        # The first substituent of b gets the proper dihedral about the c-b bond; later ones are
        # referenced to an already placed sibling. That leaves one wide (rotatable) torsion per
        # bond and makes the others narrow improper-like angles (chirality, methyl H spacing),
        # which a harmonic temperature map can scale and a flow need not correlate by hand.
        siblings = [j for j in adj[b] if j in rank and j != c]
        if siblings:
            d = min(siblings, key=lambda j: (not heavy[j], rank[j]))
        else:
            proper = [j for j in adj[c] if j in rank and j != b]
            if not proper:  # unreachable for a connected graph rooted at a 3-chain
                raise TopologyError(f"no torsion reference for atom {a}")
            d = min(proper, key=ref_key)
        parent[a] = b
        rank[a] = len(rank)
        placed_rows.append((a, b, c, d))
        for v in adj[a]:
            if v not in queued:
                queued.add(v)
                heapq.heappush(heap, (not heavy[v], dist[v], v))

    # Depth of each atom in the placement dependency graph; atoms of equal depth are placed
    # together. The three roots are placed in closed form and count as depth 0.
    level = {r0: 0, r1: 0, r2: 0}
    for a, b, c, d in placed_rows:
        level[a] = 1 + max(level[b], level[c], level[d])
    rows = sorted(placed_rows, key=lambda row: (level[row[0]], rank[row[0]]))
    bounds = [0]
    for k in range(1, len(rows)):
        if level[rows[k][0]] != level[rows[k - 1][0]]:
            bounds.append(k)
    bounds.append(len(rows))
    return ZMatrix(n_atoms, (r0, r1, r2), tuple(rows), tuple(bounds) if rows else (0,))


# ----------------------------------------------------------------------------- representation


class ICRepresentation(FittedRepresentation):
    """Cartesian x [B, N, 3] (nm) <-> standardised internal coordinates z [B, D].

    Internally every Z-matrix row k (atom ``atom_order[k + 1]``) has raw coordinates
    q[:, k] = (r, theta, phi); row 0 (root1) only uses r, row 1 (root2) only r and theta.
    The flow dims are the entries of q that are neither unused nor fixed bonds.
    """

    roots: Tensor
    row_a: Tensor
    row_b: Tensor
    row_c: Tensor
    row_d: Tensor
    dim_src: Tensor
    fixed_row_idx: Tensor
    periodic_mask: Tensor
    q_template: Tensor

    def __init__(
        self,
        zmatrix: ZMatrix,
        fixed_bonds: Iterable[tuple[int, int]] = (),
        bonds: Iterable[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.zmatrix = zmatrix
        n = zmatrix.n_atoms
        r0, r1, r2 = zmatrix.roots
        self.n_atoms = n
        self.atom_order = zmatrix.atom_order

        # Z-matrix bond of each row, to decide which rows have a fixed length.
        row_bond = [(r1, r0), (r2, r1)] + [(a, b) for a, b, _, _ in zmatrix.rows]
        row_of_bond = {frozenset(p): k for k, p in enumerate(row_bond)}
        bond_set = None if bonds is None else {frozenset((int(i), int(j))) for i, j in bonds}
        fixed_rows = set()
        for pair in fixed_bonds:
            key = frozenset(int(v) for v in pair)
            if bond_set is not None and key not in bond_set:
                raise TopologyError(f"fixed bond {tuple(pair)} is not a bond of the molecule")
            if key not in row_of_bond:
                raise TopologyError(
                    f"fixed bond {tuple(pair)} closes a ring and is not a Z-matrix bond, so its "
                    "length cannot be held fixed (X-H bonds always can)"
                )
            fixed_rows.add(row_of_bond[key])
        self.fixed_rows = tuple(sorted(fixed_rows))

        atom_of_dim, slot_of_dim, kind_of_dim, src = [], [], [], []
        token_atoms: list[int] = []
        for k, atom in enumerate(self.atom_order[1:]):
            slots = [0] if k == 0 else [0, 1] if k == 1 else [0, 1, 2]
            slots = [s for s in slots if not (s == 0 and k in fixed_rows)]
            if not slots:
                continue
            tok = len(token_atoms)
            token_atoms.append(atom)
            for s in slots:
                atom_of_dim.append(tok)
                slot_of_dim.append(s)
                kind_of_dim.append(("bond", "angle", "torsion")[s])
                src.append(3 * k + s)
        self.layout = Layout(tuple(atom_of_dim), tuple(slot_of_dim), tuple(kind_of_dim), len(token_atoms))
        self.token_atoms = tuple(token_atoms)
        self.dim = len(src)

        rows = zmatrix.rows
        long, f64 = torch.long, torch.float64
        self.register_buffer("roots", torch.tensor(zmatrix.roots, dtype=long))
        self.register_buffer("row_a", torch.tensor([r[0] for r in rows], dtype=long).reshape(-1))
        self.register_buffer("row_b", torch.tensor([r[1] for r in rows], dtype=long).reshape(-1))
        self.register_buffer("row_c", torch.tensor([r[2] for r in rows], dtype=long).reshape(-1))
        self.register_buffer("row_d", torch.tensor([r[3] for r in rows], dtype=long).reshape(-1))
        self.register_buffer("dim_src", torch.tensor(src, dtype=long).reshape(-1))
        self.register_buffer("fixed_row_idx", torch.tensor(self.fixed_rows, dtype=long).reshape(-1))
        self.register_buffer("periodic_mask", self.layout.periodic.reshape(-1))
        self.register_buffer("z_mean", torch.zeros(self.dim, dtype=f64))
        self.register_buffer("z_std", torch.ones(self.dim, dtype=f64))
        # Raw q (flattened [N-1, 3]) with the fixed bond lengths in place; flow dims overwrite it.
        self.register_buffer("q_template", torch.zeros(3 * (n - 1), dtype=f64))
        self._freeze_topology()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_topology(
        cls,
        n_atoms: int,
        bonds: Sequence[tuple[int, int]],
        elements: Sequence[str],
        fixed_bonds: Iterable[tuple[int, int]] = (),
    ) -> ICRepresentation:
        """Build the Z-matrix from the bond graph.

        Roots: the most central heavy atom with two heavy neighbours and its two most central
        heavy neighbours (a bonded chain r0-r1-r2). Then atoms are placed outwards from the
        centre, heavy atoms before hydrogens, each by (bond partner b = its most central
        placed neighbour, heavy first; angle partner c = the atom b was placed from; torsion
        partner d = b's first placed heavy-preferred substituent other than c, else a placed
        neighbour of c). Raises ``TopologyError`` for a disconnected graph or < 3 atoms.
        """
        bonds = [(int(i), int(j)) for i, j in bonds]
        zm = build_zmatrix(n_atoms, bonds, elements)
        return cls(zm, fixed_bonds=fixed_bonds, bonds=bonds)

    def torsion_dims(self) -> Tensor:
        """Indices of the periodic (torsion) dims of z."""
        return torch.nonzero(self.layout.periodic, as_tuple=False).flatten()

    # ------------------------------------------------------------------ raw q <-> x

    def internal_coordinates(self, x: Tensor) -> Tensor:
        """Raw internal coordinates q [B, N-1, 3] (nm, rad) of Cartesian x [B, N, 3]; unused entries 0."""
        r0, r1, r2 = (x[:, i] for i in self.zmatrix.roots)
        zero = x.new_zeros(x.shape[0])
        row0 = torch.stack([torch.linalg.vector_norm(r1 - r0, dim=-1), zero, zero], -1)
        row1 = torch.stack([torch.linalg.vector_norm(r2 - r1, dim=-1), bond_angle(r2, r1, r0), zero], -1)
        xa, xb, xc, xd = x[:, self.row_a], x[:, self.row_b], x[:, self.row_c], x[:, self.row_d]
        rows = torch.stack(
            [torch.linalg.vector_norm(xa - xb, dim=-1), bond_angle(xa, xb, xc), dihedral(xd, xc, xb, xa)], -1
        )
        return torch.cat([row0[:, None], row1[:, None], rows], dim=1)

    def place(self, q: Tensor) -> Tensor:
        """Cartesian x [B, N, 3] in the canonical frame from raw q [B, N-1, 3]."""
        bsz = q.shape[0]
        r10, r21, th2 = q[:, 0, 0], q[:, 1, 0], q[:, 1, 1]
        zero = torch.zeros_like(r10)
        p0 = torch.stack([zero, zero, zero], -1)
        p1 = torch.stack([r10, zero, zero], -1)
        p2 = torch.stack([r10 - r21 * torch.cos(th2), r21 * torch.sin(th2), zero], -1)
        x = q.new_zeros(bsz, self.n_atoms, 3).index_copy(1, self.roots, torch.stack([p0, p1, p2], 1))
        qr = q[:, 2:]
        bounds = self.zmatrix.level_bounds
        for lo, hi in pairwise(bounds):
            a = self.row_a[lo:hi]
            new = _nerf(
                x[:, self.row_d[lo:hi]], x[:, self.row_c[lo:hi]], x[:, self.row_b[lo:hi]],
                qr[:, lo:hi, 0], qr[:, lo:hi, 1], qr[:, lo:hi, 2],
            )
            x = x.index_copy(1, a, new)
        return x

    @staticmethod
    def q_logabsdet(q: Tensor) -> Tensor:
        """log|det dx_reduced/dq| = sum 2 log r + sum log|sin theta| (root1 has no angle)."""
        return 2.0 * torch.log(torch.abs(q[:, :, 0])).sum(-1) + torch.log(torch.abs(torch.sin(q[:, 1:, 1]))).sum(-1)

    # ------------------------------------------------------------------ raw q <-> z

    def _stats(self, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.z_mean.to(device=ref.device, dtype=ref.dtype),
            self.z_std.to(device=ref.device, dtype=ref.dtype),
            self.periodic_mask.to(ref.device),
        )

    def q_to_z(self, q: Tensor) -> Tensor:
        flat = q.reshape(q.shape[0], -1)[:, self.dim_src]
        mean, std, periodic = self._stats(flat)
        return torch.where(periodic, wrap_angle(flat), (flat - mean) / std)

    def z_to_q(self, z: Tensor) -> Tensor:
        mean, std, periodic = self._stats(z)
        # Torsions are not wrapped here: placement is 2*pi-periodic in phi anyway, and leaving
        # them alone keeps the map smooth for a flow that strays outside [-pi, pi).
        vals = torch.where(periodic, z, z * std + mean)
        template = self.q_template.to(device=z.device, dtype=z.dtype).expand(z.shape[0], -1)
        return template.index_copy(1, self.dim_src, vals).reshape(z.shape[0], self.n_atoms - 1, 3)

    def _std_logdet(self, ref: Tensor) -> Tensor:
        _, std, periodic = self._stats(ref)
        return torch.log(std)[~periodic].sum()

    def _with_fixed(self, q: Tensor) -> Tensor:
        """q with the fixed bond lengths replaced by their buffered values (projection onto the
        constraint manifold, so that forward and inverse see the same bonds)."""
        if self.fixed_row_idx.numel() == 0:
            return q
        flat = q.reshape(q.shape[0], -1)
        idx = 3 * self.fixed_row_idx
        vals = self.q_template.to(device=q.device, dtype=q.dtype)[idx].expand(q.shape[0], -1)
        return flat.index_copy(1, idx, vals).reshape(q.shape)

    # ------------------------------------------------------------------ public maps

    @torch.no_grad()
    def fit(self, x: Tensor) -> ICRepresentation:
        """Store mean/std of bonds and angles (and mean lengths of fixed bonds) from x [M, N, 3]."""
        q = self.internal_coordinates(self._fit_input(x))
        flat = q.reshape(q.shape[0], -1)
        vals = flat[:, self.dim_src]
        mean = vals.mean(0)
        std = vals.std(0, unbiased=False).clamp_min(_MIN_STD) if vals.shape[0] > 1 else torch.ones_like(mean)
        periodic = self.periodic_mask
        self.z_mean.copy_(torch.where(periodic, torch.zeros_like(mean), mean))
        self.z_std.copy_(torch.where(periodic, torch.ones_like(std), std))
        template = torch.zeros_like(self.q_template)
        idx = 3 * self.fixed_row_idx
        template[idx] = flat[:, idx].mean(0)
        self.q_template.copy_(template)
        self._mark_fitted()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, N, 3] nm -> (z [B, D], log|det dz/dx_reduced| [B])."""
        self._check_fitted()
        q = self._with_fixed(self.internal_coordinates(x))
        return self.q_to_z(q), -(self.q_logabsdet(q) + self._std_logdet(x))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, D] -> (x [B, N, 3] nm in the canonical frame, log|det dx_reduced/dz| [B])."""
        self._check_fitted()
        q = self.z_to_q(z)
        return self.place(q), self.q_logabsdet(q) + self._std_logdet(z)

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, dim={self.dim}, roots={self.zmatrix.roots}, fixed_bonds={len(self.fixed_rows)}"
