// The 2D view: each pixel decodes the LPPN at its lattice point (cell units, wrapping, so the
// texture tiles and zooms continuously). PBR models are lit as render/preview.py shade_flat lights
// a flat map facing the camera (x right, y up, z towards the viewer).
uniform vec2 uCanvas;    // pixels
uniform vec2 uPan;       // lattice point at the canvas centre
uniform float uZoom;     // pixels per cell
uniform vec3 uKeyDir;    // towards the key light, image frame
uniform vec3 uFillDir;
uniform bool uLit;
out vec4 fragColour;

void main() {
    vec2 offset = gl_FragCoord.xy - 0.5 * uCanvas;
    vec2 point = uPan + vec2(offset.x, -offset.y) / uZoom;  // y down the image, as the maps
    vec4 state[C4];
    vec4 local[LD4];
    locate(vec4(point, 0.0, 0.0), state, local);
    float o[KOUT];
    decodeOutputs(local, state, o);
    Material m = material(o);
    vec3 colour = clamp(m.colour, 0.0, 1.0);
    if (uLit && m.hasNormal) {
        vec3 n = decodedNormal(m.normal);
        vec3 radiance = shade(n, vec3(0.0, 0.0, 1.0), srgbToLinear(colour), m.roughness, m.ao, uKeyDir, uFillDir,
                              vec3(0.0, 1.0, 0.0));
        colour = linearToSrgb(radiance);
    }
    fragColour = vec4(colour, 1.0);
}
