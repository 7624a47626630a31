// A classifier's top k on the GPU, so that only k (class, probability) pairs are read back: the
// first batch row's `count` logits, their softmax (less their largest value, as the CPU
// reference `Tensor::top_k` computes it), and k rounds of an argmax over the classes not taken
// yet, in the order (value descending, class ascending), which is the CPU reference's stable
// sort. Values that are not numbers are never taken; rounds that find nothing write class
// 0xffffffff. One workgroup of 256 invocations.

struct TopKParams {
    // Logits in the row.
    count: u32,
    // Classes wanted.
    k: u32,
    pad0: u32,
    pad1: u32,
}

struct ClassScore {
    class_index: u32,
    probability: f32,
}

@group(0) @binding(0) var<storage, read> p: TopKParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> scores: array<ClassScore>;

const LANES: u32 = 256u;
const NONE: u32 = 0xffffffffu;

var<workgroup> values: array<f32, LANES>;
var<workgroup> classes: array<u32, LANES>;

// Whether (a, i) comes before (b, j): larger value first, then lower class; NONE last.
fn before(a: f32, i: u32, b: f32, j: u32) -> bool {
    if (i == NONE) {
        return false;
    }
    if (j == NONE) {
        return true;
    }
    return a > b || (a == b && i < j);
}

// Folds each lane's (value, class) into lane 0's, keeping the one that comes first.
fn reduce_first(lane: u32) {
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride && before(values[lane + stride], classes[lane + stride], values[lane], classes[lane])) {
            values[lane] = values[lane + stride];
            classes[lane] = classes[lane + stride];
        }
    }
    workgroupBarrier();
}

// Sums each lane's value into lane 0's.
fn reduce_sum(lane: u32) {
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            values[lane] = values[lane] + values[lane + stride];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn top_k(@builtin(local_invocation_index) lane: u32) {
    // The largest value (and the first class that has it).
    var best = 0.0;
    var best_class = NONE;
    for (var i = lane; i < p.count; i = i + LANES) {
        let v = x[i];
        if (v == v && before(v, i, best, best_class)) {
            best = v;
            best_class = i;
        }
    }
    values[lane] = best;
    classes[lane] = best_class;
    reduce_first(lane);
    let largest = values[0];
    let first = classes[0];
    workgroupBarrier();

    // The softmax's denominator.
    var sum = 0.0;
    for (var i = lane; i < p.count; i = i + LANES) {
        let v = x[i];
        if (v == v) {
            sum = sum + exp(v - largest);
        }
    }
    values[lane] = sum;
    reduce_sum(lane);
    let total = values[0];
    workgroupBarrier();

    // Round r takes the first (value, class) after round r - 1's.
    var last = largest;
    var last_class = NONE;
    for (var r = 0u; r < p.k; r = r + 1u) {
        best = 0.0;
        best_class = NONE;
        if (r == 0u) {
            best = largest;
            best_class = first;
        } else if (last_class != NONE) {
            for (var i = lane; i < p.count; i = i + LANES) {
                let v = x[i];
                if (v == v && before(last, last_class, v, i) && before(v, i, best, best_class)) {
                    best = v;
                    best_class = i;
                }
            }
        }
        values[lane] = best;
        classes[lane] = best_class;
        reduce_first(lane);
        last = values[0];
        last_class = classes[0];
        if (lane == 0u) {
            scores[r] = ClassScore(last_class, select(0.0, exp(last - largest) / total, last_class != NONE));
        }
        workgroupBarrier();
    }
}
