// One NCA step per cell (core/nca.py): perception -> Linear(P*C, H) + ReLU -> Linear(H, C), added
// where the cell fires (a hash of cell and step below the fire rate, or always when deterministic),
// then clamped to [-uStateLimit, uStateLimit] when the model has a state limit (> 0).
// uNca row j: W1 quads (NP * C4), then W2^T quads (C4), then (b1_j, 0, 0, 0).
uniform highp sampler2D uNca;
uniform float uFireRate;
uniform uint uSeed;
uniform bool uDeterministic;
uniform float uStateLimit;
OUTPUTS

uint hash(uint x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}

void main() {
    CELL cell;
    vec4 result[C4];
    for (int q = 0; q < C4; q++) result[q] = vec4(0.0);
    if (cellAt(ivec2(gl_FragCoord.xy), cell)) {
        vec4 p[NP * C4];
        perceive(cell, p);
        for (int q = 0; q < C4; q++) result[q] = p[q];
        float draw = float(hash(cellId(cell) * 0x9e3779b9u + hash(uSeed)) >> 8) / 16777216.0;
        if (uDeterministic || draw < uFireRate) {
            for (int j = 0; j < HID; j++) {
                float h = texelFetch(uNca, ivec2(NP * C4 + C4, j), 0).x;
                for (int k = 0; k < NP * C4; k++) h += dot(p[k], texelFetch(uNca, ivec2(k, j), 0));
                if (h > 0.0)
                    for (int q = 0; q < C4; q++) result[q] += h * texelFetch(uNca, ivec2(NP * C4 + q, j), 0);
            }
        }
        if (uStateLimit > 0.0)
            for (int q = 0; q < C4; q++) result[q] = clamp(result[q], -uStateLimit, uStateLimit);
    }
    WRITE_OUTPUTS(result)
}
