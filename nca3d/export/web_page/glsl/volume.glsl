// The volume: rays from the orbit camera through the cube [-1, 1]^3, emission-absorption with the
// LPPN per sample (render/volume.py march_rays): alpha = 1 - exp(-density dt), colour composited
// front to back over the background; uSamples samples over each ray's span in the cube.
uniform vec2 uCanvas;
uniform vec3 uEye;
uniform vec3 uRight;
uniform vec3 uUp;
uniform vec3 uForward;
uniform float uTanHalfFov;
uniform int uSamples;
uniform vec3 uBackground;
out vec4 fragColour;

void main() {
    vec2 film = (gl_FragCoord.xy - 0.5 * uCanvas) / (0.5 * uCanvas.y) * uTanHalfFov;
    vec3 direction = normalize(uForward + film.x * uRight + film.y * uUp);
    vec3 safe = mix(direction, vec3(1e-9), vec3(lessThan(abs(direction), vec3(1e-9))));
    vec3 t0 = (-1.0 - uEye) / safe, t1 = (1.0 - uEye) / safe;
    vec3 lo = min(t0, t1), hi = max(t0, t1);
    float near = max(max(max(lo.x, lo.y), lo.z), 0.0);
    float far = min(min(hi.x, hi.y), hi.z);
    vec3 colour = vec3(0.0);
    float transmittance = 1.0;
    if (far > near) {
        float dt = (far - near) / float(uSamples);
        for (int i = 0; i < 4096; i++) {
            if (i >= uSamples || transmittance < 0.003) break;
            vec3 p = uEye + (near + (float(i) + 0.5) * dt) * direction;
            vec3 cellPoint = (p + 1.0) * 0.5 * vec3(uGrid);
            vec4 state[C4];
            vec4 local[LD4];
            locate(vec4(cellPoint, 0.0), state, local);
            float o[KOUT];
            decodeOutputs(local, state, o);
            Material m = material(o);
            float alpha = 1.0 - exp(-m.density * dt);
            colour += transmittance * alpha * m.colour;
            transmittance *= 1.0 - alpha + 1e-10;
        }
    }
    fragColour = vec4(clamp(colour + transmittance * uBackground, 0.0, 1.0), 1.0);
}
