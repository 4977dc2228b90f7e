// The mesh lattice's triangles, from gl_VertexID alone: vertex 3f + k is corner k of face f.
uniform mat4 uViewProjection;
uniform highp sampler2D uNormals;
flat out int vFace;
out vec3 vBary;
out vec3 vPosition;
out vec3 vNormal;

void main() {
    int face = gl_VertexID / 3;
    int k = gl_VertexID - 3 * face;
    ivec3 corners = faceCorners(face);
    int v = k == 0 ? corners.x : (k == 1 ? corners.y : corners.z);
    vFace = face;
    vBary = vec3(k == 0, k == 1, k == 2);
    vPosition = cellPosition(v);
    vNormal = texelFetch(uNormals, indexTexel(v), 0).xyz;
    gl_Position = uViewProjection * vec4(vPosition, 1.0);
}
