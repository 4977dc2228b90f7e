// The LPPN (core/lppn.py SIREN): sin layers with omega0 folded into the weights, then a linear
// layer to KOUT raw outputs, then each output channel's activation (core/model.py activate).
// uLppn rows: layer l's output units from row l * LW4 * 4; row r holds its weight quads, then
// (bias, 0, 0, 0) in the column after them.
uniform highp sampler2D uLppn;

float rowBias(int column, int row) { return texelFetch(uLppn, ivec2(column, row), 0).x; }
vec4 quadBias(int column, int row) {
    return vec4(rowBias(column, row), rowBias(column, row + 1), rowBias(column, row + 2), rowBias(column, row + 3));
}

void lppnRaw(vec4 local[LD4], vec4 state[C4], out float o[KOUT]) {
    vec4 h[LW4];
    vec4 g[LW4];
    for (int jq = 0; jq < LW4; jq++) {
        int row = 4 * jq;
        vec4 s = quadBias(LD4 + C4, row);
        for (int k = 0; k < LD4; k++) {
            vec4 x = local[k];
            s += vec4(dot(x, texelFetch(uLppn, ivec2(k, row), 0)), dot(x, texelFetch(uLppn, ivec2(k, row + 1), 0)),
                      dot(x, texelFetch(uLppn, ivec2(k, row + 2), 0)), dot(x, texelFetch(uLppn, ivec2(k, row + 3), 0)));
        }
        for (int k = 0; k < C4; k++) {
            vec4 x = state[k];
            int c = LD4 + k;
            s += vec4(dot(x, texelFetch(uLppn, ivec2(c, row), 0)), dot(x, texelFetch(uLppn, ivec2(c, row + 1), 0)),
                      dot(x, texelFetch(uLppn, ivec2(c, row + 2), 0)), dot(x, texelFetch(uLppn, ivec2(c, row + 3), 0)));
        }
        h[jq] = sin(s);
    }
    for (int layer = 1; layer < LPPN_LAYERS - 1; layer++) {
        int base = layer * LW4 * 4;  // every layer but the last has LW rows, padded to whole quads
        for (int jq = 0; jq < LW4; jq++) {
            int row = base + 4 * jq;
            vec4 s = quadBias(LW4, row);
            for (int k = 0; k < LW4; k++) {
                vec4 x = h[k];
                s += vec4(dot(x, texelFetch(uLppn, ivec2(k, row), 0)), dot(x, texelFetch(uLppn, ivec2(k, row + 1), 0)),
                          dot(x, texelFetch(uLppn, ivec2(k, row + 2), 0)), dot(x, texelFetch(uLppn, ivec2(k, row + 3), 0)));
            }
            g[jq] = sin(s);
        }
        for (int jq = 0; jq < LW4; jq++) h[jq] = g[jq];
    }
    int last = (LPPN_LAYERS - 1) * LW4 * 4;
    for (int j = 0; j < KOUT; j++) {
        float s = rowBias(LW4, last + j);
        for (int k = 0; k < LW4; k++) s += dot(h[k], texelFetch(uLppn, ivec2(k, last + j), 0));
        o[j] = s;
    }
}

float softplus(float x) { return x > 20.0 ? x : log(1.0 + exp(x)); }

void decodeOutputs(vec4 local[LD4], vec4 state[C4], out float o[KOUT]) {
    lppnRaw(local, state, o);
    ACTIVATE
}
