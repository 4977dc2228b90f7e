// The local coordinate inside a square or cube (lattices/base.py cartesian_local): u = 2 frac - 1,
// or per axis [sin(k pi u), cos(k pi u)] for k = 1..HARMONICS; packed into LD4 quads.
void gridLocal(vec3 frac, out vec4 local[LD4]) {
    float values[LD4 * 4];
    for (int i = 0; i < LD4 * 4; i++) values[i] = 0.0;
    for (int axis = 0; axis < DIMS; axis++) {
        float u = frac[axis] * 2.0 - 1.0;
#if HARMONICS == 0
        values[axis] = u;
#else
        for (int k = 1; k <= HARMONICS; k++) {
            float angle = u * (float(k) * 3.14159265358979);
            values[axis * 2 * HARMONICS + k - 1] = sin(angle);
            values[axis * 2 * HARMONICS + HARMONICS + k - 1] = cos(angle);
        }
#endif
    }
    for (int i = 0; i < LD4; i++)
        local[i] = vec4(values[4 * i], values[4 * i + 1], values[4 * i + 2], values[4 * i + 3]);
}

// A query (x, y[, z], -) in cell units -> interpolated state and local coordinate.
void locate(vec4 query, out vec4 state[C4], out vec4 local[LD4]) {
    vec3 frac;
#if DIMS == 2
    locateGrid(query.xy, state, frac);
#else
    locateGrid(query.xyz, state, frac);
#endif
    gridLocal(frac, local);
}
