// The cell state: a 2D texture array, layer q holding channels 4q..4q+3 of every cell (C4 layers).
// Cells are laid out by the lattice file (grid_2d, grid_3d or mesh): `texelOf(cell)`.
uniform highp sampler2DArray uState;

vec4 stateQuad(ivec2 texel, int q) {
    return texelFetch(uState, ivec3(texel, q), 0);
}
