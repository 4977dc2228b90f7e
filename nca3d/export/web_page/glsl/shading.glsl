// The preview's shading (render/preview.py _shade): GGX distribution, height-correlated Smith
// visibility, Schlick Fresnel (F0 0.04), Lambert diffuse, key and fill lights, sky/ground ambient
// scaled by AO; in linear light, encoded to sRGB at the end.
const float PI = 3.14159265358979;
const float F0 = 0.04;
const float MIN_ROUGHNESS = 0.03;
const float DEFAULT_ROUGHNESS = 0.5;
const vec3 KEY_RADIANCE = vec3(2.6, 2.5, 2.3);
const vec3 FILL_RADIANCE = vec3(0.35, 0.4, 0.5);
const vec3 SKY = vec3(0.2, 0.22, 0.26);
const vec3 GROUND = vec3(0.07, 0.065, 0.06);

vec3 srgbToLinear(vec3 c) {
    return mix(pow((c + 0.055) / 1.055, vec3(2.4)), c / 12.92, vec3(lessThanEqual(c, vec3(0.04045))));
}

vec3 linearToSrgb(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, c * 12.92, vec3(lessThanEqual(c, vec3(0.0031308))));
}

vec3 ggxLight(vec3 n, vec3 v, vec3 albedo, float alpha2, float nDotV, vec3 l, vec3 radiance) {
    float nDotL = clamp(dot(n, l), 0.0, 1.0);
    vec3 h = normalize(v + l);
    float nDotH = clamp(dot(n, h), 0.0, 1.0);
    float vDotH = clamp(dot(v, h), 0.0, 1.0);
    float fresnel = F0 + (1.0 - F0) * pow(1.0 - vDotH, 5.0);
    float d = nDotH * nDotH * (alpha2 - 1.0) + 1.0;
    float distribution = alpha2 / (PI * d * d);
    float visibility = 0.5 / (nDotL * sqrt(nDotV * nDotV * (1.0 - alpha2) + alpha2)
                              + nDotV * sqrt(nDotL * nDotL * (1.0 - alpha2) + alpha2) + 1e-7);
    return ((1.0 - fresnel) * albedo / PI + distribution * visibility * fresnel) * radiance * nDotL;
}

// n, v unit (world); albedo linear; keyDir, fillDir unit towards the lights; up: the sky direction.
vec3 shade(vec3 n, vec3 v, vec3 albedo, float roughness, float ao, vec3 keyDir, vec3 fillDir, vec3 up) {
    float r = clamp(roughness, MIN_ROUGHNESS, 1.0);
    float alpha2 = (r * r) * (r * r);
    float nDotV = clamp(dot(n, v), 1e-4, 1.0);
    vec3 colour = ggxLight(n, v, albedo, alpha2, nDotV, keyDir, KEY_RADIANCE)
                + ggxLight(n, v, albedo, alpha2, nDotV, fillDir, FILL_RADIANCE);
    float sky = dot(n, up) * 0.5 + 0.5;
    return colour + albedo * (SKY * sky + GROUND * (1.0 - sky)) * ao;
}

// A model normal output in [0, 1] -> a unit vector, z towards the outside (render/maps.py decoded_normals).
vec3 decodedNormal(vec3 encoded) {
    vec3 n = encoded * 2.0 - 1.0;
    n.z = max(n.z, 1e-3);
    return normalize(n);
}
