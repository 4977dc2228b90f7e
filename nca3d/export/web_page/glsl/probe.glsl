// The test hook's decode: query i (a texel of uQueries) -> its KOUT activated outputs, written as
// K4 quads, through the same locate and decode the views use.
uniform highp sampler2D uQueries;
OUTPUTS

void main() {
    vec4 state[C4];
    vec4 local[LD4];
    locate(texelFetch(uQueries, ivec2(gl_FragCoord.xy), 0), state, local);
    float o[KOUT];
    decodeOutputs(local, state, o);
    vec4 result[K4];
    for (int i = 0; i < K4; i++) result[i] = vec4(0.0);
    for (int i = 0; i < KOUT; i++) result[i / 4][i % 4] = o[i];
    WRITE_OUTPUTS(result)
}
