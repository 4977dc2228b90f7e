// The periodic square lattice (lattices/grid.py Grid2D). A cell (x, y) is texel (x, y); x runs
// along the state's last cell axis (W), y along H. Perception, filter-major as the torch code:
// identity, Sobel-x, Sobel-y, Laplacian ([1 2 1]^2 - 16 delta).
#define CELL ivec2
uniform ivec3 uGrid;  // W, H, 1

ivec2 wrapCell(ivec2 c) { return ((c % uGrid.xy) + uGrid.xy) % uGrid.xy; }
ivec2 texelOf(ivec2 c) { return c; }
bool cellAt(ivec2 texel, out ivec2 cell) { cell = texel; return texel.x < uGrid.x && texel.y < uGrid.y; }
uint cellId(ivec2 c) { return uint(c.y * uGrid.x + c.x); }
vec3 cellPosition(ivec2 c) { return vec3(vec2(c), 0.0); }

void perceive(ivec2 cell, out vec4 p[NP * C4]) {
    for (int q = 0; q < C4; q++) {
        vec4 s[9];
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++)
                s[(dy + 1) * 3 + dx + 1] = stateQuad(wrapCell(cell + ivec2(dx, dy)), q);
        p[q] = s[4];
        // [1 2 1] along y of [-1 0 1] along x, and the transpose
        p[C4 + q] = (s[2] - s[0]) + 2.0 * (s[5] - s[3]) + (s[8] - s[6]);
        p[2 * C4 + q] = (s[6] - s[0]) + 2.0 * (s[7] - s[1]) + (s[8] - s[2]);
        p[3 * C4 + q] = (s[0] + s[2] + s[6] + s[8]) + 2.0 * (s[1] + s[3] + s[5] + s[7]) + 4.0 * s[4]
                      - 16.0 * s[4];
    }
}

// Bilinear location of a point (x, y) in cell units (wraps): interpolated state and the
// fractional position inside the square (lattices/grid.py GridLattice.locate).
void locateGrid(vec2 point, out vec4 state[C4], out vec3 frac) {
    vec2 base = floor(point);
    vec2 f = point - base;
    ivec2 c = ivec2(base);
    ivec2 c00 = wrapCell(c), c10 = wrapCell(c + ivec2(1, 0)), c01 = wrapCell(c + ivec2(0, 1)),
          c11 = wrapCell(c + ivec2(1, 1));
    float w00 = (1.0 - f.x) * (1.0 - f.y), w10 = f.x * (1.0 - f.y), w01 = (1.0 - f.x) * f.y, w11 = f.x * f.y;
    for (int q = 0; q < C4; q++)
        state[q] = w00 * stateQuad(c00, q) + w01 * stateQuad(c01, q) + w10 * stateQuad(c10, q)
                 + w11 * stateQuad(c11, q);
    frac = vec3(f, 0.0);
}

// Erase: cells within uRadius cells of uCentre.xy, measured around the torus.
bool erased(ivec2 cell, vec3 centre, vec3 direction, float radius) {
    vec2 d = abs(vec2(cell) - centre.xy);
    vec2 size = vec2(uGrid.xy);
    d = min(d, size - d);
    return length(d) <= radius;
}
