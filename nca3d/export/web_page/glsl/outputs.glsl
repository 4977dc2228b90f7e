// The decoded outputs as material inputs: OUT_* are the start index of each output, -1 when absent.
struct Material { vec3 colour; bool hasNormal; vec3 normal; float roughness; float ao; float density; };

Material material(float o[KOUT]) {
    Material m;
    m.colour = vec3(o[OUT_COLOR], o[OUT_COLOR + 1], o[OUT_COLOR + 2]);
    m.hasNormal = OUT_NORMAL >= 0;
    m.normal = vec3(0.5, 0.5, 1.0);
    m.roughness = DEFAULT_ROUGHNESS;
    m.ao = 1.0;
    m.density = 0.0;
#if OUT_NORMAL >= 0
    m.normal = vec3(o[OUT_NORMAL], o[OUT_NORMAL + 1], o[OUT_NORMAL + 2]);
#endif
#if OUT_ROUGHNESS >= 0
    m.roughness = o[OUT_ROUGHNESS];
#endif
#if OUT_AO >= 0
    m.ao = clamp(o[OUT_AO], 0.0, 1.0);
#endif
#if OUT_DENSITY >= 0
    m.density = o[OUT_DENSITY];
#endif
    return m;
}
