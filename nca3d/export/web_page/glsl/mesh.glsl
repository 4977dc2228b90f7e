// The triangle-mesh lattice (lattices/mesh.py MeshLattice): cell i is vertex i, texel
// (i % uTexWidth, i / uTexWidth). Perception: the state, then for Y = (1, d_y, d_z, d_x) of the
// unit edge direction d the mean over neighbours of Y(d) (s_j - s_i), times 6.
#define CELL int
uniform ivec3 uGrid;                   // N cells, F faces, -
uniform int uTexWidth;                 // texels per row of every per-vertex / per-face texture
uniform highp sampler2D uPositions;    // xyz of vertex i
uniform highp isampler2D uAdjacency;   // (first, count) of vertex i's neighbours in uNeighbours
uniform highp isampler2D uNeighbours;  // neighbour list k at texel (k % uTexWidth, k / uTexWidth)
uniform highp isampler2D uFaces;       // corners of face f

ivec2 indexTexel(int i) { return ivec2(i % uTexWidth, i / uTexWidth); }
ivec2 texelOf(int i) { return indexTexel(i); }
bool cellAt(ivec2 texel, out int cell) { cell = texel.y * uTexWidth + texel.x; return cell < uGrid.x; }
uint cellId(int i) { return uint(i); }
vec3 cellPosition(int i) { return texelFetch(uPositions, indexTexel(i), 0).xyz; }

void perceive(int cell, out vec4 p[NP * C4]) {
    ivec2 range = texelFetch(uAdjacency, indexTexel(cell), 0).xy;
    vec3 here = cellPosition(cell);
    float scale = 6.0 / max(float(range.y), 1.0);
    for (int q = 0; q < C4; q++) {
        p[q] = stateQuad(indexTexel(cell), q);
        for (int k = 1; k < NP; k++) p[k * C4 + q] = vec4(0.0);
    }
    for (int n = 0; n < range.y; n++) {
        int j = texelFetch(uNeighbours, indexTexel(range.x + n), 0).x;
        vec3 d = cellPosition(j) - here;
        float len = length(d);
        d = len > 0.0 ? d / len : vec3(0.0);
        vec4 y = vec4(1.0, d.y, d.z, d.x) * scale;
        for (int q = 0; q < C4; q++) {
            vec4 diff = stateQuad(indexTexel(j), q) - p[q];
            p[C4 + q] += y.x * diff;
            p[2 * C4 + q] += y.y * diff;
            p[3 * C4 + q] += y.z * diff;
            p[4 * C4 + q] += y.w * diff;
        }
    }
}

float triangularCdf(float x, float mode) {
    x = clamp(x, 0.0, 1.0);
    float rising = mode > 0.0 ? x * x / mode : 0.0;
    float falling = 1.0 - (1.0 - x) * (1.0 - x) / (1.0 - mode);
    return x <= mode ? rising : falling;
}

// The C0 local coordinate of barycentrics (lattices/base.py triangle_local), or bary * 2 - 1.
vec3 triangleLocal(vec3 bary) {
#if SORTED_CDF
    float a = max(bary.x, max(bary.y, bary.z));
    float c = min(bary.x, min(bary.y, bary.z));
    float b = 1.0 - a - c;
    return vec3(triangularCdf((a - 1.0 / 3.0) * 1.5, 0.25), triangularCdf(b * 2.0, 2.0 / 3.0),
                triangularCdf(c * 3.0, 0.0)) * 2.0 - 1.0;
#else
    return bary * 2.0 - 1.0;
#endif
}

ivec3 faceCorners(int face) { return texelFetch(uFaces, indexTexel(face), 0).xyz; }

void locateFace(int face, vec3 bary, out vec4 state[C4], out vec4 local[LD4]) {
    ivec3 corners = faceCorners(face);
    for (int q = 0; q < C4; q++)
        state[q] = bary.x * stateQuad(indexTexel(corners.x), q) + bary.y * stateQuad(indexTexel(corners.y), q)
                 + bary.z * stateQuad(indexTexel(corners.z), q);
    local[0] = vec4(triangleLocal(bary), 0.0);
}

// A query (face, b0, b1, b2) -> interpolated state and local coordinate.
void locate(vec4 query, out vec4 state[C4], out vec4 local[LD4]) {
    locateFace(int(query.x + 0.5), query.yzw, state, local);
}

// Erase: vertices within `radius` of `centre`.
bool erased(int cell, vec3 centre, vec3 direction, float radius) {
    return length(cellPosition(cell) - centre) <= radius;
}
