"""Host side of the FP8 GEMM kernel family (include/deep_gemm/fp8_gemm.cuh).

`Fp8GemmConfig` names one compiled kernel (its template arguments) plus the run-time raster group
and grid size; `Fp8GemmPlan` is everything a warm call needs for one problem shape: the loaded
kernel, the launch config and the parameter values that do not depend on tensor addresses.
"""
from __future__ import annotations

import ctypes
import dataclasses
import math

from ..jit import runtime
from .common import TensorMapBytes, current_stream, layout_asserts, params_struct, set_tensor_map

BLOCK_K = 128
K_STEPS = BLOCK_K // 32   # m64nNk32 wgmmas per k-block and m64 slice (Fp8GemmConfig::K_STEPS)

# Epilogue kinds; values match the C++ enum.
EPI_TMA_STORE, EPI_TMA_REDUCE, EPI_DIRECT, EPI_DIRECT_ACCUMULATE = 0, 1, 2, 3
# Cluster pairing; values match TileScheduler's kPairAxis.
PAIR_NONE, PAIR_M, PAIR_N = 0, 1, 2
# Problem kinds; values match GemmKind in scheduler.cuh.
KIND_DENSE, KIND_CONTIGUOUS, KIND_MASKED = 0, 1, 2

Fp8GemmParams = params_struct("Fp8GemmParams", [
    ("tma_a", TensorMapBytes), ("tma_b", TensorMapBytes), ("tma_sfa", TensorMapBytes), ("tma_d", TensorMapBytes),
    ("tma_d_tail", TensorMapBytes),
    ("sfb", ctypes.c_uint64), ("d", ctypes.c_uint64), ("grouped_layout", ctypes.c_uint64),
    ("m", ctypes.c_uint32), ("n", ctypes.c_uint32), ("k", ctypes.c_uint32),
    ("sfb_ld", ctypes.c_uint32), ("ldd", ctypes.c_uint32), ("raster_group", ctypes.c_uint32),
    ("num_groups", ctypes.c_uint32), ("sfb_group_stride", ctypes.c_uint32),
    ("a_tail_rows", ctypes.c_uint32), ("b_tail_rows", ctypes.c_uint32),
    ("tma_a_tail", TensorMapBytes), ("tma_sfa_tail", TensorMapBytes), ("tma_b_tail", TensorMapBytes)])
_OFF_A, _OFF_B, _OFF_SFA, _OFF_D, _OFF_D_TAIL, _OFF_A_TAIL, _OFF_SFA_TAIL, _OFF_B_TAIL = (
    getattr(Fp8GemmParams, f).offset
    for f in ("tma_a", "tma_b", "tma_sfa", "tma_d", "tma_d_tail", "tma_a_tail", "tma_sfa_tail", "tma_b_tail"))

# acc + temporaries per thread that leave room for addresses and scales under the setmaxnreg budget
# (232 registers with two math warpgroups, 240 with one). ptxas (NVRTC 13.0 and 13.5): 192 floats
# compile without spills either way, 256 spill.
MAX_ACCUMULATOR_FLOATS = 192
MAX_SMEM = 232448   # sm_90 opt-in dynamic shared memory per block
SMEM_ALIGN_SLACK = 1024


def valid_block_n(block_n: int) -> bool:
    """BLOCK_N values the kernel accepts: multiples of 8 up to 256 whose tiles, starting at any
    multiple of BLOCK_N, overlap at most two 128-wide B scale blocks."""
    if block_n % 8 or not 8 <= block_n <= 256:
        return False
    low_bit = min(block_n & -block_n, 128)
    return block_n <= 128 + low_bit


def scale_boundary_cases(block_n: int) -> int:
    """How many positions the B scale boundary can take inside a tile of this width (mirrors
    ScaleBoundary in fp8_gemm.cuh): tiles start at multiples of block_n, so 128 - (n0 % 128) is a
    multiple of gcd(block_n, 128). Serial kernels compile one promotion per position when there are
    at most MAX_BOUNDARY_CASES of them; otherwise the promotion selects a scale per column group."""
    step = math.gcd(block_n, 128)
    return sum(1 for r in range(0, 128, step) if r == 0 or 128 - r < block_n)


MAX_BOUNDARY_CASES = 8


def k_tail_steps(k: int) -> int:
    """The k_tail a problem of depth K compiles for: the 32-wide steps that hold data in its last
    k-block when that block is short, 0 when it is full or the only one (a tile's first k-block
    always runs in full)."""
    if k <= BLOCK_K:
        return 0
    return -(-(k % BLOCK_K) // 32) % K_STEPS


def balanced_clusters(units: int, max_clusters: int) -> int:
    """The fewest persistent clusters that walk `units` tile units in as many rounds as
    `max_clusters` would: 512 tiles take 4 rounds on 128 CTAs as on 132, and the 4 idle SMs draw
    less power than 16 SMs idling through the last round (the card runs at its power cap)."""
    if units <= max_clusters:
        return max(units, 1)
    rounds = -(-units // max_clusters)
    return -(-units // rounds)


def tail_box_rows(config: "Fp8GemmConfig", m: int, n: int) -> tuple[int, int]:
    """Rows of the TMA boxes that load the last row block of A (and its scales) and the last
    column block of B when M or N is not a multiple of the tile: the rows that exist, rounded up
    to 8 (0: no tail map). A box mostly out of bounds costs TMA far more than its zero-filled bytes
    suggest (H200, session 17: at M = 1 a 64-row A box made 1x576x7168 1.7x slower). The rows a
    tail box leaves out keep stale shared memory, which reaches only outputs that are not stored.
    Not for the operand a multicast pair splits in halves, nor B of the grouped kinds (the rows
    past an expert's N are the next expert's), nor A of the contiguous kind."""
    c = config
    a_rows = -(-(m % c.block_m) // 8) * 8
    b_rows = -(-(n % c.block_n) // 8) * 8
    a_ok = c.kind in (KIND_DENSE, KIND_MASKED) and c.pair_axis != PAIR_N and a_rows < c.block_m
    b_ok = c.kind == KIND_DENSE and c.pair_axis != PAIR_M and b_rows < c.block_n
    return (a_rows if a_ok else 0), (b_rows if b_ok else 0)


def with_tail_boxes(config: "Fp8GemmConfig", m: int, n: int) -> "Fp8GemmConfig":
    """`config` compiled with tail boxes exactly when an M x N problem has a tail to load."""
    needed = any(tail_box_rows(config, m, n))
    return config if config.tail_boxes == needed else dataclasses.replace(config, tail_boxes=needed)


@dataclasses.dataclass(frozen=True)
class Fp8GemmConfig:
    block_m: int
    block_n: int
    stages: int
    num_math_wg: int
    pair_axis: int = PAIR_NONE
    out_f32: bool = False
    epilogue: int = EPI_TMA_STORE
    # double-buffered temporary accumulator: the next k-block's wgmmas overlap this one's promotion
    pipelined: bool = False
    kind: int = KIND_DENSE
    # CTAs of a cluster that share one tile, each computing a slice of K (1 = no split); their FP32
    # partial tiles are summed in rank order through distributed shared memory
    split_k: int = 1
    # k-blocks per iteration of the serial main loop, which lets ptxas overlap one k-block's setup
    # with the previous promotion. None: the most of 4, 2 or 1 that the tile takes without spills
    # (k_unroll; first_without_spills also falls back to 1 when ptxas disagrees). Pipelined kernels
    # unroll their own way and ignore it.
    unroll: int | None = None
    # 32-wide K steps of data in the problem's last k-block, which then runs only those wgmmas
    # (k_tail_steps(K): 1-3; 0 = all four). Follows from K: the heuristic and the API set it.
    k_tail: int = 0
    # The last row (column) block loads through a TMA box of only the rows that exist, when M (N)
    # is not a multiple of the tile (tail_box_rows). Follows from M and N: Fp8GemmPlan sets it.
    tail_boxes: bool = False
    # run-time parameters (not template arguments)
    raster_group: int = 8
    num_sms: int = 132

    # ---- derived sizes; must mirror Fp8GemmConfig in fp8_gemm.cuh (the generated source asserts it)
    @property
    def wg_m(self) -> int:
        return self.block_m // self.num_math_wg

    @property
    def cluster(self) -> int:
        return self.split_k if self.pair_axis == PAIR_NONE else 2

    @property
    def num_threads(self) -> int:
        return (self.num_math_wg + 1) * 128

    @property
    def tma_epilogue(self) -> bool:
        return self.split_k == 1 and self.epilogue in (EPI_TMA_STORE, EPI_TMA_REDUCE)

    @property
    def out_bytes(self) -> int:
        return 4 if self.out_f32 else 2

    @property
    def two_expert_tiles(self) -> bool:
        """Contiguous 256-row tiles: each warpgroup's 128 rows have one expert, but the two may
        differ, and such a tile is computed once per expert (TileScheduler::kTwoExpertTiles)."""
        return self.kind == KIND_CONTIGUOUS and self.block_m == 256 and self.wg_m == 128

    @property
    def k_unroll(self) -> int:
        """The K_UNROLL template argument: `unroll` for serial kernels, 1 for pipelined ones. By
        default 4, less where ptxas (13.0 or 13.5) spills: tiles that straddle B scale blocks,
        with 144 accumulators or more, take 2 (128x144, 128x192, 64x192) unless they have more
        than 144 and more than two boundary positions (128x160: 1), as do tiles that select
        scales per column."""
        if self.pipelined:
            return 1
        if self.unroll is not None:
            return self.unroll
        cases, floats = scale_boundary_cases(self.block_n), self.accumulator_floats()
        if self.selects_scales_per_column() or (cases > 2 and floats > 144):
            return 1
        if cases > 1 and floats >= 144:
            return 2
        return 4

    def selects_scales_per_column(self) -> bool:
        """The promotion picks each column group's B scale at run time (tiles that straddle two
        scale blocks, in the pipelined loop or with too many boundary positions to compile)."""
        return scale_boundary_cases(self.block_n) > 1 and (
            self.pipelined or scale_boundary_cases(self.block_n) > MAX_BOUNDARY_CASES)

    def accumulator_floats(self) -> int:
        """FP32 accumulator registers per math thread: the result (one m64 slice per 64 rows of the
        warpgroup) plus temporaries: two per slice when pipelined, one slice's worth when serial
        (the slices take turns)."""
        slices = self.wg_m // 64
        return (3 * slices if self.pipelined else slices + 1) * self.block_n // 2

    def fixed_smem_bytes(self) -> int:
        stage = self.block_m * BLOCK_K + self.block_n * BLOCK_K
        d = self.block_m * self.block_n * self.out_bytes if self.tma_epilogue else 0
        partial = self.block_m * (self.block_n + 4) * 4 if self.split_k > 1 else 0
        bars = 2 * self.stages + (2 if self.split_k > 1 else 0)
        return self.stages * stage + d + self.stages * self.block_m * 4 + partial + bars * 8

    def smem_bytes(self, k: int) -> int:
        num_k_blocks = -(-k // BLOCK_K)
        return self.fixed_smem_bytes() + self.num_math_wg * 4 * num_k_blocks * 4 + SMEM_ALIGN_SLACK

    def template_args(self) -> str:
        return (f"{self.block_m}, {self.block_n}, {self.stages}, {self.num_math_wg}, {self.pair_axis}, "
                f"{'true' if self.out_f32 else 'false'}, {self.epilogue}, {'true' if self.pipelined else 'false'}, "
                f"{self.kind}, {self.split_k}, {self.k_unroll}, {self.k_tail}, {'true' if self.tail_boxes else 'false'}")

    def kernel_name(self) -> str:
        """Unique per compiled kernel (run-time fields excluded)."""
        return (f"fp8_gemm_m{self.block_m}_n{self.block_n}_s{self.stages}_wg{self.num_math_wg}_p{self.pair_axis}_"
                f"{'f32' if self.out_f32 else 'bf16'}_e{self.epilogue}{'_pp' if self.pipelined else ''}"
                f"{'' if self.kind == KIND_DENSE else f'_g{self.kind}'}"
                f"{'' if self.split_k == 1 else f'_k{self.split_k}'}"
                f"{'' if self.k_unroll == 1 else f'_u{self.k_unroll}'}"
                f"{'' if self.k_tail == 0 else f'_t{self.k_tail}'}"
                f"{'_tb' if self.tail_boxes else ''}")

    def check(self) -> None:
        """Raises ValueError for configs the kernel cannot run (mirrors its static_asserts)."""
        problems = []
        if self.block_m not in (64, 128, 256):
            problems.append(f"block_m={self.block_m} not in (64, 128, 256)")
        if self.num_math_wg not in (1, 2) or self.block_m % (64 * self.num_math_wg) or self.wg_m > 128:
            problems.append(f"num_math_wg={self.num_math_wg} must split block_m={self.block_m} into 64 or 128 rows")
        if not valid_block_n(self.block_n):
            problems.append(f"block_n={self.block_n} is not a multiple of 8 in [8, 256] that stays within two "
                            f"scale blocks")
        if self.pair_axis == PAIR_M and self.block_n % 16:
            problems.append("pairing along M multicasts B halves: block_n must be a multiple of 16")
        if self.pair_axis == PAIR_N and self.block_m % 16:
            problems.append("pairing along N multicasts A halves: block_m must be a multiple of 16")
        if self.epilogue in (EPI_TMA_REDUCE, EPI_DIRECT_ACCUMULATE) and not self.out_f32:
            problems.append("accumulating epilogues need FP32 output")
        if self.stages < (3 if self.pipelined else 1):
            problems.append(f"stages must be >= {3 if self.pipelined else 1}")
        if self.num_sms < self.cluster or (self.pair_axis != PAIR_NONE and self.num_sms % 2):
            problems.append(f"num_sms={self.num_sms} must be at least the cluster size {self.cluster} "
                            f"(and even with multicast pairs)")
        if self.kind != KIND_DENSE and (self.pair_axis == PAIR_M or (128 % self.block_m and not self.two_expert_tiles)):
            problems.append("grouped GEMMs need block_m dividing 128 (experts are 128-row aligned; contiguous "
                            "layouts also take 256-row tiles of two 128-row warpgroups) and no M pairing")
        if self.kind == KIND_MASKED and self.epilogue not in (EPI_TMA_STORE, EPI_DIRECT):
            problems.append("masked grouped GEMMs store their output (no accumulation)")
        if not 1 <= self.split_k <= 8:
            problems.append(f"split_k={self.split_k} not in [1, 8] (a portable cluster has at most 8 CTAs)")
        if self.split_k > 1 and (self.pair_axis != PAIR_NONE or self.kind == KIND_CONTIGUOUS):
            problems.append("split-K runs without multicast pairs, for the dense and masked kinds")
        if self.unroll not in (None, 1, 2, 4, 8):
            problems.append(f"unroll={self.unroll} not in (1, 2, 4, 8)")
        if self.k_tail not in range(K_STEPS):
            problems.append(f"k_tail={self.k_tail} not in 0..{K_STEPS - 1}")
        if self.accumulator_floats() > MAX_ACCUMULATOR_FLOATS:
            problems.append(f"{self.accumulator_floats()} accumulator registers per thread exceed the "
                            f"{MAX_ACCUMULATOR_FLOATS} that compile without spills")
        if problems:
            raise ValueError(f"invalid FP8 GEMM config {self}: " + "; ".join(problems))

    def source(self) -> str:
        cpp_cfg = f"deep_gemm::Fp8GemmConfig<{self.template_args()}>"
        return (
            "#include <deep_gemm/fp8_gemm.cuh>\n"
            f"{layout_asserts('deep_gemm::Fp8GemmParams', Fp8GemmParams)}\n"
            f"static_assert({cpp_cfg}::FIXED_SMEM_BYTES == {self.fixed_smem_bytes()}, \"host smem model is stale\");\n"
            f"static_assert(deep_gemm::ScaleBoundary<{self.block_n}>::CASES == {scale_boundary_cases(self.block_n)} && "
            f"deep_gemm::kMaxBoundaryCases == {MAX_BOUNDARY_CASES}, \"host scale-boundary model is stale\");\n"
        )

    def kernel_expr(self) -> str:
        return f"&deep_gemm::fp8_gemm_kernel<{self.template_args()}>"

    def build(self):
        """Compiles (or fetches from the disk cache) without touching a GPU."""
        self.check()
        return runtime.build(self.kernel_name(), self.source(), self.kernel_expr())


class Fp8GemmPlan:
    """A ready-to-launch kernel for one (shape, layout) signature. Per call only addresses change.
    For the masked kind, m is M_max (rows per expert in A and D) and num_groups the expert count;
    for the contiguous kind, m is M_sum."""

    def __init__(self, config: Fp8GemmConfig, m: int, n: int, k: int, device: int, num_groups: int = 1):
        config = with_tail_boxes(config, m, n)
        config.check()
        if k <= 0:
            # Serial kernels run a tile's first k-block unconditionally; the API handles K = 0.
            raise ValueError(f"K={k}: the kernel needs at least one K block")
        if config.k_tail not in (0, k_tail_steps(k)):
            # A kernel compiled for a shorter last k-block would drop data of this K.
            raise ValueError(f"config {config.kernel_name()} is compiled for a last k-block of {32 * config.k_tail} "
                             f"columns; K={k} needs k_tail={k_tail_steps(k)} (or 0)")
        smem = config.smem_bytes(k)
        if smem > MAX_SMEM:
            raise ValueError(f"config {config.kernel_name()} needs {smem} B of shared memory for K={k}, "
                             f"more than the {MAX_SMEM} B a Hopper block can have")
        self.config, self.m, self.n, self.k, self.device, self.num_groups = config, m, n, k, device, num_groups
        kernel = runtime.get_kernel(config.kernel_name(), config.source(), config.kernel_expr())
        func = kernel.function(device, smem)
        clusters = config.num_sms // config.cluster
        if config.cluster > 2:
            # Persistent clusters beyond what can be resident would run as a second wave.
            probe = runtime.Launcher(func, clusters * config.cluster, config.num_threads, smem, config.cluster)
            clusters = max(1, min(clusters, probe.max_active_clusters()))
        if config.kind != KIND_MASKED:   # the masked kind's tile count lives on the device
            clusters = balanced_clusters(self.num_tile_units(), clusters)
        self.grid = max(clusters, 1) * config.cluster
        self.launcher = runtime.Launcher(func, self.grid, config.num_threads, smem, config.cluster)
        c = config
        # Rows of the A and B boxes (a multicast pair loads half the shared operand per CTA); the sfa
        # box has block_m.
        self.a_rows = c.block_m // 2 if c.pair_axis == PAIR_N else c.block_m
        self.b_rows = c.block_n // 2 if c.pair_axis == PAIR_M else c.block_n
        # The TMA epilogue stores 128-byte column chunks (swizzled) and a narrower tail chunk.
        chunk = 128 // c.out_bytes
        self.d_box = (chunk, c.wg_m)
        self.d_tail_box = (c.block_n % chunk, c.wg_m)
        self.d_dtype = "f32" if c.out_f32 else "bf16"
        self.a_tail_rows, self.b_tail_rows = tail_box_rows(c, m, n)
        if c.kind == KIND_MASKED:
            self.d_box, self.d_tail_box = self.d_box + (1,), self.d_tail_box + (1,)

    def num_tile_units(self) -> int:
        c = self.config
        mb, nb = -(-self.m // c.block_m), -(-self.n // c.block_n)
        if c.pair_axis == PAIR_M:
            mb = -(-mb // 2)
        elif c.pair_axis == PAIR_N:
            nb = -(-nb // 2)
        return mb * nb

    def make_params(self, a_ptr: int, lda: int, b_ptr: int, ldb: int, sfa_ptr: int, sfa_ld: int, sfb_ptr: int,
                    sfb_ld: int, d_ptr: int, ldd: int, layout_ptr: int = 0, a_group_stride: int = 0,
                    sfa_group_stride: int = 0, sfb_group_stride: int = 0, d_group_stride: int = 0) -> Fp8GemmParams:
        """The kernel's parameter block. Strides are in elements; sfa is MN-major (sfa_ld = distance
        between K blocks); the group strides are distances between experts (grouped kinds)."""
        m, n, k, g = self.m, self.n, self.k, self.num_groups
        kb = -(-k // BLOCK_K)
        c = self.config
        tensor_map = runtime.tensor_map
        masked = c.kind == KIND_MASKED
        p = Fp8GemmParams()
        # The masked kind adds the expert as A's and sfa's outermost dimension, one expert a box.
        if masked:
            a_dims, a_strides = (k, m, g), (lda, a_group_stride)
            sfa_dims, sfa_strides = (m, kb, g), (sfa_ld * 4, sfa_group_stride * 4)
        else:
            a_dims, a_strides = (k, m), (lda,)
            sfa_dims, sfa_strides = (m, kb), (sfa_ld * 4,)
        expert_box = (1,) if masked else ()

        def a_and_sfa_maps(a_rows: int, sfa_rows: int) -> tuple[bytes, bytes]:
            return (tensor_map("e4m3", a_ptr, a_dims, a_strides, (BLOCK_K, a_rows) + expert_box, 128),
                    tensor_map("f32", sfa_ptr, sfa_dims, sfa_strides, (sfa_rows, 1) + expert_box))

        def b_map(rows: int) -> bytes:
            return tensor_map("e4m3", b_ptr, (k, n * g), (ldb,), (BLOCK_K, rows), 128)

        a_map, sfa_map = a_and_sfa_maps(self.a_rows, c.block_m)
        set_tensor_map(p, _OFF_A, a_map)
        set_tensor_map(p, _OFF_B, b_map(self.b_rows))
        set_tensor_map(p, _OFF_SFA, sfa_map)
        if self.a_tail_rows:
            a_map, sfa_map = a_and_sfa_maps(self.a_tail_rows, self.a_tail_rows)
            set_tensor_map(p, _OFF_A_TAIL, a_map)
            set_tensor_map(p, _OFF_SFA_TAIL, sfa_map)
        if self.b_tail_rows:
            set_tensor_map(p, _OFF_B_TAIL, b_map(self.b_tail_rows))
        if c.tma_epilogue:
            elem = c.out_bytes
            dims, strides = (n, m), (ldd * elem,)
            if masked:
                dims, strides = dims + (g,), strides + (d_group_stride * elem,)
            set_tensor_map(p, _OFF_D, tensor_map(self.d_dtype, d_ptr, dims, strides, self.d_box, 128))
            if self.d_tail_box[0]:
                set_tensor_map(p, _OFF_D_TAIL, tensor_map(self.d_dtype, d_ptr, dims, strides, self.d_tail_box))
        p.sfb, p.d, p.grouped_layout = sfb_ptr, d_ptr, layout_ptr
        p.m, p.n, p.k, p.sfb_ld, p.ldd, p.raster_group = m, n, k, sfb_ld, ldd, c.raster_group
        p.num_groups, p.sfb_group_stride = g, sfb_group_stride
        p.a_tail_rows, p.b_tail_rows = self.a_tail_rows, self.b_tail_rows
        return p

    def launch(self, params: Fp8GemmParams, stream: int | None = None) -> None:
        self.launcher(params, current_stream(self.device) if stream is None else stream)

    def bound_launch(self, params: Fp8GemmParams) -> tuple:
        """(launch, address, device, keep): `launch(address, current_stream(device))` launches
        `params` again on the current stream; `keep` must live as long as that may happen."""
        launch, address, keep = self.launcher.bind(params)
        return launch, address, self.device, keep
