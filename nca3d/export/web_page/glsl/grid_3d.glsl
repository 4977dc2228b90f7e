// The periodic cube lattice (lattices/grid.py Grid3D), tiled into a 2D atlas: slice z sits in
// tile (z % uTiles, z / uTiles), each tile W x H texels. Perception, filter-major: identity,
// Sobel x/y/z (/2), the 27-point Laplacian (/8).
#define CELL ivec3
uniform ivec3 uGrid;  // W, H, D
uniform int uTiles;   // tiles per atlas row

ivec3 wrapCell(ivec3 c) { return ((c % uGrid) + uGrid) % uGrid; }
ivec2 texelOf(ivec3 c) { return ivec2((c.z % uTiles) * uGrid.x + c.x, (c.z / uTiles) * uGrid.y + c.y); }
bool cellAt(ivec2 texel, out ivec3 cell) {
    ivec2 tile = texel / uGrid.xy;
    cell = ivec3(texel - tile * uGrid.xy, tile.y * uTiles + tile.x);
    return tile.x < uTiles && cell.z < uGrid.z;
}
uint cellId(ivec3 c) { return uint((c.z * uGrid.y + c.y) * uGrid.x + c.x); }
// World position in the cube [-1, 1]^3 (render/volume.py: cell coordinate (p + 1) / 2 * n).
vec3 cellPosition(ivec3 c) { return vec3(c) / vec3(uGrid) * 2.0 - 1.0; }

void perceive(ivec3 cell, out vec4 p[NP * C4]) {
    for (int q = 0; q < C4; q++) {
        vec4 centre = stateQuad(texelOf(cell), q);
        vec4 sx = vec4(0.0), sy = vec4(0.0), sz = vec4(0.0), smooth3 = vec4(0.0), corners = vec4(0.0);
        for (int dz = -1; dz <= 1; dz++)
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    vec4 s = stateQuad(texelOf(wrapCell(cell + ivec3(dx, dy, dz))), q);
                    float wx = float(2 - dx * dx), wy = float(2 - dy * dy), wz = float(2 - dz * dz);
                    sx += float(dx) * wy * wz * s;
                    sy += float(dy) * wx * wz * s;
                    sz += float(dz) * wx * wy * s;
                    smooth3 += wx * wy * wz * s;
                    if (dx * dx * dy * dy * dz * dz == 1) corners += s;
                }
        p[q] = centre;
        p[C4 + q] = sx * 0.5;
        p[2 * C4 + q] = sy * 0.5;
        p[3 * C4 + q] = sz * 0.5;
        p[4 * C4 + q] = (1.5 * smooth3 + 0.5 * corners - 100.0 * centre) * 0.125;
    }
}

// Trilinear location of a point (x, y, z) in cell units (wraps).
void locateGrid(vec3 point, out vec4 state[C4], out vec3 frac) {
    vec3 base = floor(point);
    vec3 f = point - base;
    ivec3 c = ivec3(base);
    for (int q = 0; q < C4; q++) state[q] = vec4(0.0);
    for (int k = 0; k < 8; k++) {
        ivec3 o = ivec3(k & 1, (k >> 1) & 1, (k >> 2) & 1);
        vec3 w3 = mix(1.0 - f, f, vec3(o));
        float w = w3.x * w3.y * w3.z;
        ivec2 texel = texelOf(wrapCell(c + o));
        for (int q = 0; q < C4; q++) state[q] += w * stateQuad(texel, q);
    }
    frac = f;
}

// Erase: cells within `radius` (world units) of the ray centre + t * direction.
bool erased(ivec3 cell, vec3 centre, vec3 direction, float radius) {
    vec3 d = cellPosition(cell) - centre;
    return length(d - dot(d, direction) * direction) <= radius;
}
