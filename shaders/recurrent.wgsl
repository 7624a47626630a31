// LSTM and GRU, forward, as ONNX defines them (default activations: sigmoid, tanh, tanh). One
// workgroup per batch element walks the sequence; its 64 invocations share the hidden (and cell)
// state in workgroup memory, each owning hidden units lid, lid + 64, ... (at most 256 units).
// x is [seq, batch, input]; w [gates * hidden, input]; r [gates * hidden, hidden];
// b [2 * gates * hidden] (input biases, then recurrent ones); initial [2 * batch * hidden]
// (h, then c); y [seq, batch, hidden]. LSTM gates are ordered i, o, f, c; GRU's z, r, h.

struct RecurrentParams {
    seq: u32,
    batch: u32,
    input_size: u32,
    hidden: u32,
    // 0: LSTM, 1: GRU.
    gru: u32,
    has_bias: u32,
    has_initial: u32,
}

@group(0) @binding(0) var<storage, read> p: RecurrentParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
@group(0) @binding(3) var<storage, read> r: array<elem>;
@group(0) @binding(4) var<storage, read> b: array<elem>;
@group(0) @binding(5) var<storage, read> initial: array<elem>;
@group(0) @binding(6) var<storage, read_write> y: array<elem>;

var<workgroup> h_state: array<f32, 256>;
var<workgroup> c_state: array<f32, 256>;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// Row `row` of w times x_t, plus row `row` of r times h (workgroup state).
fn input_product(row: u32, t: u32, n: u32) -> f32 {
    var acc = 0.0;
    let xb = (t * p.batch + n) * p.input_size;
    for (var k = 0u; k < p.input_size; k++) { acc += f32(w[row * p.input_size + k]) * f32(x[xb + k]); }
    return acc;
}

fn recurrent_product(row: u32) -> f32 {
    var acc = 0.0;
    for (var k = 0u; k < p.hidden; k++) { acc += f32(r[row * p.hidden + k]) * h_state[k]; }
    return acc;
}

fn input_bias(row: u32) -> f32 {
    return select(0.0, f32(b[row]), p.has_bias != 0u);
}

fn recurrent_bias(row: u32, gates: u32) -> f32 {
    return select(0.0, f32(b[gates * p.hidden + row]), p.has_bias != 0u);
}

@compute @workgroup_size(64)
fn recurrent(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = wid.x;
    let hidden = p.hidden;
    for (var j = lid.x; j < hidden; j += 64u) {
        h_state[j] = select(0.0, f32(initial[n * hidden + j]), p.has_initial != 0u);
        c_state[j] = select(0.0, f32(initial[(p.batch + n) * hidden + j]), p.has_initial != 0u && p.gru == 0u);
    }
    workgroupBarrier();
    let gates = select(4u, 3u, p.gru != 0u);
    for (var t = 0u; t < p.seq; t++) {
        var new_h: array<f32, 4>;
        var new_c: array<f32, 4>;
        for (var k = 0u; k < 4u; k++) {
            let j = lid.x + 64u * k;
            if (j >= hidden) { break; }
            if (p.gru == 0u) {
                let gate = fn_gate(j, t, n, gates);
                let i_gate = sigmoid(gate.x);
                let o_gate = sigmoid(gate.y);
                let f_gate = sigmoid(gate.z);
                let candidate = tanh(gate.w);
                let c = f_gate * c_state[j] + i_gate * candidate;
                new_c[k] = c;
                new_h[k] = o_gate * tanh(c);
            } else {
                let z_row = j;
                let r_row = hidden + j;
                let h_row = 2u * hidden + j;
                let z = sigmoid(input_product(z_row, t, n) + input_bias(z_row) + recurrent_product(z_row) + recurrent_bias(z_row, gates));
                let reset = sigmoid(input_product(r_row, t, n) + input_bias(r_row) + recurrent_product(r_row) + recurrent_bias(r_row, gates));
                // linear_before_reset = 1 (what torch exports; the import refuses 0).
                let recurrent_h = reset * (recurrent_product(h_row) + recurrent_bias(h_row, gates));
                let candidate = tanh(input_product(h_row, t, n) + input_bias(h_row) + recurrent_h);
                new_h[k] = (1.0 - z) * candidate + z * h_state[j];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < 4u; k++) {
            let j = lid.x + 64u * k;
            if (j >= hidden) { break; }
            h_state[j] = new_h[k];
            c_state[j] = new_c[k];
            y[(t * p.batch + n) * hidden + j] = elem(new_h[k]);
        }
        workgroupBarrier();
    }
}

// The four LSTM gate pre-activations (i, o, f, c) of hidden unit j at step t.
fn fn_gate(j: u32, t: u32, n: u32, gates: u32) -> vec4<f32> {
    var out: vec4<f32>;
    for (var g = 0u; g < 4u; g++) {
        let row = g * p.hidden + j;
        out[g] = input_product(row, t, n) + input_bias(row) + recurrent_product(row) + recurrent_bias(row, gates);
    }
    return out;
}
