// The mesh surface: each fragment decodes the LPPN from its triangle's three corner states, its
// barycentrics and the C0 local transform (MeshLattice.locate), then is lit by the preview's
// shading. A PBR normal lives in the mesh models' frame (right, up, n) of ops/bake.py up_frames.
uniform vec3 uEye;
uniform vec3 uKeyDir;   // world, towards the key light
uniform vec3 uFillDir;
flat in int vFace;
in vec3 vBary;
in vec3 vPosition;
in vec3 vNormal;
out vec4 fragColour;

void main() {
    vec3 bary = max(vBary, 0.0);
    bary /= bary.x + bary.y + bary.z;
    vec4 state[C4];
    vec4 local[LD4];
    locateFace(vFace, bary, state, local);
    float o[KOUT];
    decodeOutputs(local, state, o);
    Material m = material(o);
    vec3 view = normalize(uEye - vPosition);
    vec3 geometric = normalize(cross(dFdx(vPosition), dFdy(vPosition)));
    float facing = dot(geometric, view) < 0.0 ? -1.0 : 1.0;  // double-sided
    vec3 n = normalize(vNormal);
    if (m.hasNormal) {
        vec3 worldUp = abs(n.y) > 1.0 - 1e-6 ? vec3(0.0, 0.0, 1.0) : vec3(0.0, 1.0, 0.0);
        vec3 up = normalize(worldUp - dot(worldUp, n) * n);
        vec3 right = cross(up, n);
        vec3 t = decodedNormal(m.normal);
        n = normalize(t.x * right + t.y * up + t.z * n);
    }
    n *= facing;
    vec3 albedo = srgbToLinear(clamp(m.colour, 0.0, 1.0));
    vec3 radiance = shade(n, view, albedo, m.roughness, m.ao, uKeyDir, uFillDir, vec3(0.0, 1.0, 0.0));
    fragColour = vec4(linearToSrgb(radiance), 1.0);
}
