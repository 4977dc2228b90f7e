// Erase a region of cells back to the seed state (zeros), as core/grow.py erase_ball does.
uniform vec3 uCentre;
uniform vec3 uDirection;
uniform float uRadius;
OUTPUTS

void main() {
    CELL cell;
    vec4 result[C4];
    for (int q = 0; q < C4; q++) result[q] = vec4(0.0);
    if (cellAt(ivec2(gl_FragCoord.xy), cell) && !erased(cell, uCentre, uDirection, uRadius))
        for (int q = 0; q < C4; q++) result[q] = stateQuad(texelOf(cell), q);
    WRITE_OUTPUTS(result)
}
