// nca3d web: grows a neural cellular automaton texture live on the GPU with WebGL2.
// The models, lattices and shaders arrive as script files that call NCA3D.register*; nothing is
// fetched, so the page works from file:// and offline. window.nca3dTest is the test hook.
"use strict";

(function () {
  const NCA3D = (window.NCA3D = window.NCA3D || {});
  NCA3D.shaders = {};
  NCA3D.models = {};
  NCA3D.lattices = {};
  NCA3D.manifest = { models: [] };
  NCA3D.registerShaders = (shaders) => Object.assign(NCA3D.shaders, shaders);
  NCA3D.registerModel = (model) => { NCA3D.models[model.name] = model; };
  NCA3D.registerLattice = (lattice) => { NCA3D.lattices[lattice.key] = lattice; };
  NCA3D.registerManifest = (manifest) => { NCA3D.manifest = manifest; };

  const MESH_TEXTURE_WIDTH = 1024;
  const KEY_LIGHT = [-0.65, 0.6, 0.45];   // render/preview.py KEY_LIGHT: camera frame (right, up, back)
  const FILL_LIGHT = [0.85, -0.05, 0.35];
  const FOV_DEG = 30;

  // ------------------------------------------------------------------ small helpers

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => reject(new Error(`cannot load ${src}: is the exported folder complete?`));
      document.head.appendChild(script);
    });
  }

  function bytes(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out.buffer;
  }
  const f32 = (base64) => new Float32Array(bytes(base64));
  const i32 = (base64) => new Int32Array(bytes(base64));
  const quads = (n) => Math.ceil(n / 4);

  function normalize(v) {
    const l = Math.hypot(v[0], v[1], v[2]) || 1;
    return [v[0] / l, v[1] / l, v[2] / l];
  }
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
  const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
  const combine = (basis, c) => add(add(scale(basis[0], c[0]), scale(basis[1], c[1])), scale(basis[2], c[2]));

  // ------------------------------------------------------------------ GL plumbing

  function compile(gl, type, source, label) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      const log = gl.getShaderInfoLog(shader);
      const numbered = source.split("\n").map((line, i) => `${i + 1}: ${line}`).join("\n");
      throw new Error(`shader ${label} does not compile: ${log}\n${numbered}`);
    }
    return shader;
  }

  function program(gl, vertexSource, fragmentSource, label) {
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, vertexSource, label + " (vertex)"));
    gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, fragmentSource, label));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(`program ${label} does not link: ${gl.getProgramInfoLog(p)}`);
    const uniforms = {};
    const count = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < count; i++) {
      const info = gl.getActiveUniform(p, i);
      uniforms[info.name] = gl.getUniformLocation(p, info.name);
    }
    return { handle: p, uniforms, label };
  }

  function texture2D(gl, width, height, internal, format, type, data) {
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, internal, width, height, 0, format, type, data);
    return t;
  }

  // A float RGBA texture (width x height) from rows of `values` quads: values[r] is a Float32Array.
  function floatTexture(gl, width, height, data) {
    return texture2D(gl, width, height, gl.RGBA32F, gl.RGBA, gl.FLOAT, data);
  }

  // Integer data laid out `width` items per row (1, 2 or 4 components per item).
  function intTexture(gl, items, components, width) {
    const count = items.length / components;
    const height = Math.max(1, Math.ceil(count / width));
    const padded = new Int32Array(width * height * components);
    padded.set(items);
    const formats = { 1: [gl.R32I, gl.RED_INTEGER], 2: [gl.RG32I, gl.RG_INTEGER], 4: [gl.RGBA32I, gl.RGBA_INTEGER] };
    const [internal, format] = formats[components];
    return texture2D(gl, width, height, internal, format, gl.INT, padded);
  }

  function arrayTexture(gl, width, height, layers) {
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D_ARRAY, t);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texStorage3D(gl.TEXTURE_2D_ARRAY, 1, gl.RGBA32F, width, height, layers);
    return t;
  }

  function layeredFramebuffer(gl, texture, layers) {
    const fb = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    const buffers = [];
    for (let q = 0; q < layers; q++) {
      gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0 + q, texture, 0, q);
      buffers.push(gl.COLOR_ATTACHMENT0 + q);
    }
    gl.drawBuffers(buffers);
    const status = gl.checkFramebufferStatus(gl.FRAMEBUFFER);
    if (status !== gl.FRAMEBUFFER_COMPLETE) throw new Error(`float render target incomplete (status ${status})`);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    return fb;
  }

  // Fragment outputs `count` quads: declarations and a write of a vec4 array (constant indices).
  function outputDefines(count) {
    const decl = [];
    const write = [];
    for (let q = 0; q < count; q++) {
      decl.push(`layout(location = ${q}) out vec4 outQuad${q};`);
      write.push(`outQuad${q} = values[${q}];`);
    }
    return { OUTPUTS: decl.join(" "), WRITE: `#define WRITE_OUTPUTS(values) ${write.join(" ")}` };
  }

  // ------------------------------------------------------------------ the simulation of one model

  class Simulation {
    // model: the registered model data; lattice: mesh lattice data (mesh models) or null;
    // grid: cell counts [x, y(, z)] for grid models (default: the model's training grid).
    constructor(gl, model, lattice, grid) {
      this.gl = gl;
      this.model = model;
      this.lattice = lattice;
      this.domain = model.domain;
      this.kind = model.lattice;
      this.C = model.channels;
      this.C4 = quads(model.channels);
      this.K = model.num_outputs;
      this.K4 = quads(this.K);
      this.deterministic = false;
      this.steps = 0;
      this.seed = 1;
      this.setupLattice(grid);
      this.setupWeights();
      this.buildPrograms();
      this.allocateState();
      this.reset();
    }

    setupLattice(grid) {
      const gl = this.gl;
      if (this.kind === "mesh") {
        const L = this.lattice;
        this.cells = L.vertex_count;
        this.grid = [L.vertex_count, L.face_count, 1];
        this.texWidth = MESH_TEXTURE_WIDTH;
        this.texW = MESH_TEXTURE_WIDTH;
        this.texH = Math.max(1, Math.ceil(this.cells / MESH_TEXTURE_WIDTH));
        this.positions = f32(L.vertices);
        this.faces = i32(L.faces);
        const normals = f32(L.normals);
        const offsets = i32(L.offsets);
        const neighbours = i32(L.neighbours);
        const pad = (src, n) => { const out = new Float32Array(this.texW * this.texH * 4); for (let i = 0; i < n; i++) { out.set(src.subarray(3 * i, 3 * i + 3), 4 * i); } return out; };
        this.textures = {
          uPositions: floatTexture(gl, this.texW, this.texH, pad(this.positions, this.cells)),
          uNormals: floatTexture(gl, this.texW, this.texH, pad(normals, this.cells)),
        };
        const adjacency = new Int32Array(2 * this.cells);
        for (let i = 0; i < this.cells; i++) { adjacency[2 * i] = offsets[i]; adjacency[2 * i + 1] = offsets[i + 1] - offsets[i]; }
        const faces4 = new Int32Array(4 * L.face_count);
        for (let f = 0; f < L.face_count; f++) faces4.set(this.faces.subarray(3 * f, 3 * f + 3), 4 * f);
        this.intTextures = {
          uAdjacency: intTexture(gl, adjacency, 2, MESH_TEXTURE_WIDTH),
          uNeighbours: intTexture(gl, neighbours.length ? neighbours : new Int32Array(1), 1, MESH_TEXTURE_WIDTH),
          uFaces: intTexture(gl, faces4, 4, MESH_TEXTURE_WIDTH),
        };
        this.centre = L.centre;
        this.radius = L.radius;
        this.extent = L.extent;
      } else {
        const size = grid || this.model.grid_size.slice().reverse();  // grid_size is (H, W) / (D, H, W)
        this.grid = this.kind === "grid2d" ? [size[0], size[1], 1] : [size[0], size[1], size[2]];
        this.cells = this.grid[0] * this.grid[1] * this.grid[2];
        this.tiles = this.kind === "grid3d" ? Math.ceil(Math.sqrt(this.grid[2])) : 1;
        this.texW = this.grid[0] * this.tiles;
        this.texH = this.grid[1] * Math.ceil(this.grid[2] / this.tiles);
        this.textures = {};
        this.intTextures = {};
      }
    }

    // Texel (x, y) of flat cell index i (torch order: the state's cells flattened row-major).
    texelOfIndex(i) {
      if (this.kind === "mesh") return [i % this.texW, Math.floor(i / this.texW)];
      const [W, H] = this.grid;
      const x = i % W, y = Math.floor(i / W) % H, z = Math.floor(i / (W * H));
      return [(z % this.tiles) * W + x, Math.floor(z / this.tiles) * H + y];
    }

    setupWeights() {
      const gl = this.gl, m = this.model, C4 = this.C4;
      this.NP = m.perception;
      this.H = m.hidden;
      // NCA: row j = [W1 quads (NP*C4), W2^T quads (C4), (b1, 0, 0, 0)]
      const w1 = f32(m.nca.w1), b1 = f32(m.nca.b1), w2t = f32(m.nca.w2t);
      const width = this.NP * C4 + C4 + 1;
      const data = new Float32Array(width * this.H * 4);
      for (let j = 0; j < this.H; j++) {
        data.set(w1.subarray(j * this.NP * C4 * 4, (j + 1) * this.NP * C4 * 4), j * width * 4);
        data.set(w2t.subarray(j * C4 * 4, (j + 1) * C4 * 4), (j * width + this.NP * C4) * 4);
        data[(j * width + this.NP * C4 + C4) * 4] = b1[j];
      }
      this.ncaTexture = floatTexture(gl, width, this.H, data);
      // LPPN: layer l from row l * LW4 * 4; row = [weight quads, (bias, 0, 0, 0)]
      const layers = m.lppn;
      this.LD4 = quads(m.local_dim);
      this.LW = layers[0].rows;
      this.LW4 = quads(this.LW);
      const lwidth = Math.max(this.LD4 + C4, this.LW4) + 1;
      const rows = (layers.length - 1) * this.LW4 * 4 + layers[layers.length - 1].rows;
      const ldata = new Float32Array(lwidth * rows * 4);
      layers.forEach((layer, l) => {
        const w = f32(layer.w), b = f32(layer.b);
        const inQuads = layer.cols / 4;
        for (let r = 0; r < layer.rows; r++) {
          const row = l * this.LW4 * 4 + r;
          ldata.set(w.subarray(r * layer.cols, (r + 1) * layer.cols), row * lwidth * 4);
          ldata[(row * lwidth + inQuads) * 4] = b[r];
        }
      });
      this.lppnTexture = floatTexture(gl, lwidth, rows, ldata);
    }

    defines(extra) {
      const m = this.model;
      const index = (name) => { const o = m.outputs.find((c) => c.name === name); return o ? o.start : -1; };
      const colour = index("albedo") >= 0 ? index("albedo") : index("rgb");
      const activate = [];
      for (const o of m.outputs) {
        for (let i = o.start; i < o.start + o.size; i++) {
          if (o.activation === "offset") activate.push(`o[${i}] += 0.5;`);
          else if (o.activation === "relu") activate.push(`o[${i}] = max(o[${i}], 0.0);`);
          else activate.push(`o[${i}] = softplus(o[${i}]);`);
        }
      }
      const lines = [
        "#version 300 es",
        "precision highp float;", "precision highp int;", "precision highp sampler2D;",
        "precision highp sampler2DArray;", "precision highp isampler2D;",
        `#define C4 ${this.C4}`, `#define HID ${this.H}`, `#define NP ${this.NP}`,
        `#define LD4 ${this.LD4}`, `#define LW ${this.LW}`, `#define LW4 ${this.LW4}`,
        `#define LPPN_LAYERS ${m.lppn.length}`, `#define KOUT ${this.K}`, `#define K4 ${this.K4}`,
        `#define HARMONICS ${m.harmonics}`, `#define DIMS ${this.kind === "grid3d" ? 3 : 2}`,
        `#define SORTED_CDF ${m.triangle_coord === "sorted_cdf" ? 1 : 0}`,
        `#define OUT_COLOR ${colour}`, `#define OUT_NORMAL ${index("normal")}`,
        `#define OUT_ROUGHNESS ${index("roughness")}`, `#define OUT_AO ${index("ao")}`,
        `#define OUT_DENSITY ${index("density")}`,
        `#define ACTIVATE ${activate.join(" ")}`,
      ];
      if (extra) lines.push(extra);
      return lines.join("\n") + "\n";
    }

    source(parts, outputs) {
      const S = NCA3D.shaders;
      const latticeFile = { grid2d: ["grid_2d", "grid_local"], grid3d: ["grid_3d", "grid_local"], mesh: ["mesh"] }[this.kind];
      const names = [];
      for (const part of parts) {
        if (part === "LATTICE") names.push("state", ...latticeFile);
        else names.push(part);
      }
      let text = names.map((n) => { if (!(n in S)) throw new Error(`shader ${n} missing from shaders.js`); return S[n]; }).join("\n");
      let extra = "";
      if (outputs) {
        const o = outputDefines(outputs);
        text = text.replace("OUTPUTS", o.OUTPUTS);
        extra = o.WRITE;
      }
      return this.defines(extra) + text;
    }

    buildPrograms() {
      const gl = this.gl, full = NCA3D.shaders.fullscreen_vert;
      const vertex = this.defines() + full;
      this.programs = {
        step: program(gl, vertex, this.source(["LATTICE", "nca_step"], this.C4), "nca_step"),
        erase: program(gl, vertex, this.source(["LATTICE", "erase"], this.C4), "erase"),
        probe: program(gl, vertex, this.source(["LATTICE", "lppn", "probe"], this.K4), "probe"),
      };
      if (this.kind === "grid2d") {
        this.programs.view = program(gl, vertex, this.source(["LATTICE", "lppn", "shading", "outputs", "view_2d"]), "view_2d");
      } else if (this.kind === "grid3d") {
        this.programs.view = program(gl, vertex, this.source(["LATTICE", "lppn", "shading", "outputs", "volume"]), "volume");
      } else {
        this.programs.view = program(gl, this.source(["LATTICE", "surface_vert"]),
          this.source(["LATTICE", "lppn", "shading", "outputs", "surface"]), "surface");
      }
    }

    allocateState() {
      const gl = this.gl;
      this.stateTextures = [0, 1].map(() => arrayTexture(gl, this.texW, this.texH, this.C4));
      this.stateFramebuffers = this.stateTextures.map((t) => layeredFramebuffer(gl, t, this.C4));
      this.current = 0;
      this.readFramebuffer = gl.createFramebuffer();
    }

    // Bind the programme, the state, weights and lattice textures and the lattice uniforms.
    use(p) {
      const gl = this.gl;
      gl.useProgram(p.handle);
      let unit = 0;
      const bind = (name, target, texture) => {
        if (!(name in p.uniforms)) return;
        gl.activeTexture(gl.TEXTURE0 + unit);
        gl.bindTexture(target, texture);
        gl.uniform1i(p.uniforms[name], unit);
        unit++;
      };
      bind("uState", gl.TEXTURE_2D_ARRAY, this.stateTextures[this.current]);
      bind("uNca", gl.TEXTURE_2D, this.ncaTexture);
      bind("uLppn", gl.TEXTURE_2D, this.lppnTexture);
      for (const [name, t] of Object.entries(this.textures)) bind(name, gl.TEXTURE_2D, t);
      for (const [name, t] of Object.entries(this.intTextures)) bind(name, gl.TEXTURE_2D, t);
      this.unit = unit;
      const u = p.uniforms;
      if (u.uGrid) gl.uniform3i(u.uGrid, this.grid[0], this.grid[1], this.grid[2]);
      if (u.uTiles) gl.uniform1i(u.uTiles, this.tiles);
      if (u.uTexWidth) gl.uniform1i(u.uTexWidth, this.texWidth);
      return u;
    }

    bindExtra(p, name, target, texture) {
      const gl = this.gl;
      if (!(name in p.uniforms)) return;
      gl.activeTexture(gl.TEXTURE0 + this.unit);
      gl.bindTexture(target, texture);
      gl.uniform1i(p.uniforms[name], this.unit);
      this.unit++;
    }

    // A pass over every state texel, written to the other state texture.
    statePass(p, setUniforms) {
      const gl = this.gl;
      const u = this.use(p);
      if (setUniforms) setUniforms(u);
      gl.bindFramebuffer(gl.FRAMEBUFFER, this.stateFramebuffers[1 - this.current]);
      gl.viewport(0, 0, this.texW, this.texH);
      gl.disable(gl.DEPTH_TEST);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      this.current = 1 - this.current;
    }

    step(count) {
      const gl = this.gl;
      for (let i = 0; i < count; i++) {
        this.statePass(this.programs.step, (u) => {
          gl.uniform1f(u.uFireRate, this.model.fire_rate);
          gl.uniform1ui(u.uSeed, (this.seed * 1000003 + this.steps) >>> 0);
          gl.uniform1i(u.uDeterministic, this.deterministic ? 1 : 0);
          gl.uniform1f(u.uStateLimit, this.model.state_limit || 0.0);
        });
        this.steps++;
      }
    }

    // Erase cells: a wrapped disc (2D, cell units), a ball (mesh, world units) or a tube along a
    // ray (volume, world units).
    erase(centre, direction, radius) {
      const gl = this.gl;
      this.statePass(this.programs.erase, (u) => {
        gl.uniform3fv(u.uCentre, centre);
        gl.uniform3fv(u.uDirection, direction || [0, 0, 1]);
        gl.uniform1f(u.uRadius, radius);
      });
    }

    reset() {
      const gl = this.gl;
      for (const fb of this.stateFramebuffers) {
        gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
        for (let q = 0; q < this.C4; q++) gl.clearBufferfv(gl.COLOR, q, [0, 0, 0, 0]);
      }
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      this.steps = 0;
      this.seed++;
    }

    // state: cells * C floats in torch order (cells flattened, channels last).
    setState(values) {
      const gl = this.gl, C = this.C;
      if (values.length !== this.cells * C) throw new Error(`setState needs ${this.cells * C} values, got ${values.length}`);
      gl.bindTexture(gl.TEXTURE_2D_ARRAY, this.stateTextures[this.current]);
      for (let q = 0; q < this.C4; q++) {
        const layer = new Float32Array(this.texW * this.texH * 4);
        for (let i = 0; i < this.cells; i++) {
          const [x, y] = this.texelOfIndex(i);
          for (let c = 0; c < 4 && 4 * q + c < C; c++) layer[(y * this.texW + x) * 4 + c] = values[i * C + 4 * q + c];
        }
        gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, 0, 0, 0, q, this.texW, this.texH, 1, gl.RGBA, gl.FLOAT, layer);
      }
    }

    readLayers(texture, layers, width, height) {
      const gl = this.gl;
      gl.bindFramebuffer(gl.READ_FRAMEBUFFER, this.readFramebuffer);
      const out = [];
      for (let q = 0; q < layers; q++) {
        gl.framebufferTextureLayer(gl.READ_FRAMEBUFFER, gl.COLOR_ATTACHMENT0, texture, 0, q);
        const data = new Float32Array(width * height * 4);
        gl.readPixels(0, 0, width, height, gl.RGBA, gl.FLOAT, data);
        out.push(data);
      }
      gl.bindFramebuffer(gl.READ_FRAMEBUFFER, null);
      return out;
    }

    getState() {
      const layers = this.readLayers(this.stateTextures[this.current], this.C4, this.texW, this.texH);
      const C = this.C, out = new Float32Array(this.cells * C);
      for (let i = 0; i < this.cells; i++) {
        const [x, y] = this.texelOfIndex(i);
        for (let c = 0; c < C; c++) out[i * C + c] = layers[c >> 2][(y * this.texW + x) * 4 + (c & 3)];
      }
      return out;
    }

    // queries: [[x, y(, z)], ...] in cell units (grids) or [[face, b0, b1, b2], ...] (meshes)
    // -> Float32Array (Q * K) of activated outputs.
    decode(queries) {
      const gl = this.gl, Q = queries.length;
      const width = Math.min(Q, 1024), height = Math.ceil(Q / width);
      const data = new Float32Array(width * height * 4);
      queries.forEach((q, i) => { for (let c = 0; c < q.length; c++) data[4 * i + c] = q[c]; });
      const input = floatTexture(gl, width, height, data);
      const output = arrayTexture(gl, width, height, this.K4);
      const fb = layeredFramebuffer(gl, output, this.K4);
      const p = this.programs.probe;
      this.use(p);
      this.bindExtra(p, "uQueries", gl.TEXTURE_2D, input);
      gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
      gl.viewport(0, 0, width, height);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      const layers = this.readLayers(output, this.K4, width, height);
      const out = new Float32Array(Q * this.K);
      for (let i = 0; i < Q; i++) for (let k = 0; k < this.K; k++) out[i * this.K + k] = layers[k >> 2][i * 4 + (k & 3)];
      gl.deleteFramebuffer(fb);
      gl.deleteTexture(output);
      gl.deleteTexture(input);
      return out;
    }

    dispose() {
      const gl = this.gl;
      for (const p of Object.values(this.programs)) gl.deleteProgram(p.handle);
      for (const t of [...this.stateTextures, this.ncaTexture, this.lppnTexture, ...Object.values(this.textures),
        ...Object.values(this.intTextures)]) gl.deleteTexture(t);
      for (const fb of [...this.stateFramebuffers, this.readFramebuffer]) gl.deleteFramebuffer(fb);
    }
  }

  // ------------------------------------------------------------------ cameras and views

  function perspective(fovDeg, aspect, near, far) {
    const f = 1 / Math.tan((fovDeg * Math.PI) / 360);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1, 0, 0, (2 * far * near) / (near - far), 0];
  }

  function multiply(a, b) {  // column-major 4x4: a * b
    const out = new Array(16).fill(0);
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) out[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k];
    return out;
  }

  class Orbit {
    constructor(target, radius) {
      this.target = target;
      this.radius = radius;
      this.azimuth = (35 * Math.PI) / 180;   // render/preview.py: a 3/4 view
      this.elevation = (25 * Math.PI) / 180;
      this.distance = (radius * 1.08) / Math.sin((FOV_DEG * Math.PI) / 360);
    }
    frame() {
      const ce = Math.cos(this.elevation);
      const towardsEye = [Math.sin(this.azimuth) * ce, Math.sin(this.elevation), Math.cos(this.azimuth) * ce];
      const eye = add(this.target, scale(towardsEye, this.distance));
      const forward = normalize(sub(this.target, eye));
      const right = normalize(cross(forward, [0, 1, 0]));
      const up = cross(right, forward);
      return { eye, forward, right, up };
    }
    viewProjection(aspect) {
      const { eye, forward, right, up } = this.frame();
      const view = [right[0], up[0], -forward[0], 0, right[1], up[1], -forward[1], 0, right[2], up[2], -forward[2], 0,
        -dot(right, eye), -dot(up, eye), dot(forward, eye), 1];
      const near = Math.max(this.distance - this.radius * 2, this.radius * 0.01);
      return multiply(perspective(FOV_DEG, aspect, near, this.distance + this.radius * 2), view);
    }
    // The ray through canvas pixel (px, py) (CSS pixels from the top left) of a w x h canvas.
    ray(px, py, w, h) {
      const { eye, forward, right, up } = this.frame();
      const t = Math.tan((FOV_DEG * Math.PI) / 360);
      const fx = ((px - w / 2) / (h / 2)) * t, fy = (-(py - h / 2) / (h / 2)) * t;
      return { origin: eye, direction: normalize(add(forward, add(scale(right, fx), scale(up, fy)))) };
    }
    rotate(dx, dy) {
      this.azimuth -= dx * 0.01;
      this.elevation = Math.max(-1.5, Math.min(1.5, this.elevation + dy * 0.01));
    }
    zoom(factor) {
      this.distance = Math.max(this.radius * 1.05, Math.min(this.radius * 20, this.distance * factor));
    }
  }

  // ------------------------------------------------------------------ the application

  class App {
    constructor(canvas) {
      this.canvas = canvas;
      const gl = canvas.getContext("webgl2", { antialias: false, preserveDrawingBuffer: true, alpha: false });
      if (!gl) throw new Error("this browser has no WebGL2; nca3d web needs it");
      if (!gl.getExtension("EXT_color_buffer_float")) throw new Error("this browser cannot render to float textures (EXT_color_buffer_float)");
      this.gl = gl;
      this.vao = gl.createVertexArray();
      gl.bindVertexArray(this.vao);
      this.sim = null;
      this.paused = false;
      this.stepsPerFrame = 2;
      this.renderScale = 1;
      this.samples = 64;
      this.brush = 0.1;
      this.lit = true;
      this.keyLight = normalize(KEY_LIGHT);
      this.fillLight = normalize(FILL_LIGHT);
      this.background = [1, 1, 1];
      this.frames = [];
      this.stepTimes = [];
      this.lastFrameTime = performance.now();
    }

    async load(name, grid) {
      const entry = NCA3D.manifest.models.find((m) => m.name === name);
      if (!entry) throw new Error(`no model '${name}' in this page`);
      if (!NCA3D.models[name]) await loadScript(entry.file);
      const model = NCA3D.models[name];
      let lattice = null;
      if (model.domain === "mesh") {
        if (!NCA3D.lattices[model.mesh_lattice]) await loadScript(entry.lattice_file);
        lattice = NCA3D.lattices[model.mesh_lattice];
      }
      const deterministic = this.sim ? this.sim.deterministic : false;
      if (this.sim) this.sim.dispose();
      this.sim = new Simulation(this.gl, model, lattice, grid);
      this.sim.deterministic = deterministic;
      this.name = name;
      this.resetView();
      return this.info();
    }

    info() {
      const s = this.sim;
      return { name: this.name, domain: s.domain, lattice: s.kind, cells: s.cells, channels: s.C, outputs: s.K,
        grid: s.grid.slice(), steps: s.steps, texture: [s.texW, s.texH] };
    }

    resetView() {
      const s = this.sim;
      if (s.kind === "grid2d") {
        this.pan = [s.grid[0] / 2, s.grid[1] / 2];
        this.zoom = null;  // fit on the next frame
      } else if (s.kind === "grid3d") {
        this.orbit = new Orbit([0, 0, 0], Math.sqrt(3));
      } else {
        this.orbit = new Orbit(s.centre, s.radius);
      }
    }

    resize() {
      const ratio = (window.devicePixelRatio || 1) * this.renderScale;
      const w = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
      const h = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
      if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    }

    // Lights towards (right, up, back) of the camera as world vectors.
    cameraLights(frame) {
      const basis = [frame.right, frame.up, scale(frame.forward, -1)];
      return [normalize(combine(basis, this.keyLight)), normalize(combine(basis, this.fillLight))];
    }

    render() {
      const gl = this.gl, s = this.sim;
      this.resize();
      const w = this.canvas.width, h = this.canvas.height;
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      gl.viewport(0, 0, w, h);
      const p = s.programs.view;
      const u = s.use(p);
      if (s.kind === "grid2d") {
        if (this.zoom === null) this.zoom = Math.min(this.canvas.clientWidth, this.canvas.clientHeight) / Math.max(s.grid[0], s.grid[1]);
        gl.disable(gl.DEPTH_TEST);
        gl.uniform2f(u.uCanvas, w, h);
        gl.uniform2f(u.uPan, this.pan[0], this.pan[1]);
        gl.uniform1f(u.uZoom, this.zoom * (w / Math.max(1, this.canvas.clientWidth)));  // zoom: CSS pixels per cell
        gl.uniform3fv(u.uKeyDir, this.keyLight);
        gl.uniform3fv(u.uFillDir, this.fillLight);
        gl.uniform1i(u.uLit, this.lit ? 1 : 0);
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      } else if (s.kind === "grid3d") {
        const f = this.orbit.frame();
        gl.disable(gl.DEPTH_TEST);
        gl.uniform2f(u.uCanvas, w, h);
        gl.uniform3fv(u.uEye, f.eye);
        gl.uniform3fv(u.uRight, f.right);
        gl.uniform3fv(u.uUp, f.up);
        gl.uniform3fv(u.uForward, f.forward);
        gl.uniform1f(u.uTanHalfFov, Math.tan((FOV_DEG * Math.PI) / 360));
        gl.uniform1i(u.uSamples, this.samples);
        gl.uniform3fv(u.uBackground, this.background);
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      } else {
        const f = this.orbit.frame();
        const [key, fill] = this.cameraLights(f);
        gl.clearColor(0.18, 0.18, 0.2, 1);
        gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
        gl.enable(gl.DEPTH_TEST);
        gl.uniformMatrix4fv(u.uViewProjection, false, this.orbit.viewProjection(w / h));
        gl.uniform3fv(u.uEye, f.eye);
        gl.uniform3fv(u.uKeyDir, key);
        gl.uniform3fv(u.uFillDir, fill);
        gl.drawArrays(gl.TRIANGLES, 0, 3 * s.lattice.face_count);
        gl.disable(gl.DEPTH_TEST);
      }
    }

    // One animation frame: steps (unless paused), then the view; keeps the speed readout.
    frame() {
      const now = performance.now();
      if (!this.paused) this.sim.step(this.stepsPerFrame);
      this.render();
      this.frames.push(now);
      if (!this.paused) this.stepTimes.push([now, this.stepsPerFrame]);
      while (this.frames.length && now - this.frames[0] > 1000) this.frames.shift();
      while (this.stepTimes.length && now - this.stepTimes[0][0] > 1000) this.stepTimes.shift();
    }

    speed() {
      const span = this.frames.length > 1 ? (this.frames[this.frames.length - 1] - this.frames[0]) / 1000 : 0;
      const fps = span > 0 ? (this.frames.length - 1) / span : 0;
      const steps = this.stepTimes.slice(1).reduce((a, t) => a + t[1], 0);
      return { fps, stepsPerSecond: span > 0 ? steps / span : 0 };
    }

    // Erase under canvas position (px, py) in CSS pixels.
    eraseAt(px, py) {
      const s = this.sim;
      const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
      if (s.kind === "grid2d") {
        const x = this.pan[0] + (px - w / 2) / this.zoom, y = this.pan[1] + (py - h / 2) / this.zoom;
        const gx = ((x % s.grid[0]) + s.grid[0]) % s.grid[0], gy = ((y % s.grid[1]) + s.grid[1]) % s.grid[1];
        s.erase([gx, gy, 0], [0, 0, 1], this.brush * Math.max(s.grid[0], s.grid[1]));
        return true;
      }
      const ray = this.orbit.ray(px, py, w, h);
      if (s.kind === "grid3d") {
        s.erase(ray.origin, ray.direction, this.brush * 2);
        return true;
      }
      const hit = this.pick(ray);
      if (hit === null) return false;
      s.erase(hit, [0, 0, 1], this.brush * s.extent);
      return true;
    }

    // The nearest hit of a ray on the mesh lattice (Moller-Trumbore), or null.
    pick(ray) {
      const s = this.sim, P = s.positions, F = s.faces;
      let best = Infinity;
      const o = ray.origin, d = ray.direction;
      for (let f = 0; f < F.length / 3; f++) {
        const a = 3 * F[3 * f], b = 3 * F[3 * f + 1], c = 3 * F[3 * f + 2];
        const e1 = [P[b] - P[a], P[b + 1] - P[a + 1], P[b + 2] - P[a + 2]];
        const e2 = [P[c] - P[a], P[c + 1] - P[a + 1], P[c + 2] - P[a + 2]];
        const pv = cross(d, e2);
        const det = dot(e1, pv);
        if (Math.abs(det) < 1e-12) continue;
        const tv = [o[0] - P[a], o[1] - P[a + 1], o[2] - P[a + 2]];
        const uu = dot(tv, pv) / det;
        if (uu < 0 || uu > 1) continue;
        const qv = cross(tv, e1);
        const vv = dot(d, qv) / det;
        if (vv < 0 || uu + vv > 1) continue;
        const t = dot(e2, qv) / det;
        if (t > 0 && t < best) best = t;
      }
      return best < Infinity ? add(o, scale(d, best)) : null;
    }
  }

  // ------------------------------------------------------------------ user interface

  function setupInterface(app) {
    const $ = (id) => document.getElementById(id);
    const picker = $("model");
    for (const m of NCA3D.manifest.models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.domain}, ${m.outputs})`;
      picker.appendChild(option);
    }
    picker.parentElement.style.display = NCA3D.manifest.models.length > 1 ? "" : "none";

    const gridSelect = $("grid");
    function gridChoices() {
      const s = app.sim;
      gridSelect.innerHTML = "";
      if (s.kind === "mesh") { gridSelect.parentElement.style.display = "none"; return; }
      gridSelect.parentElement.style.display = "";
      const base = s.model.grid_size.slice().reverse();
      const factors = s.kind === "grid2d" ? [1, 2, 4, 8, 16] : [1, 1.5, 2, 2.75];
      const seen = new Set();
      for (const k of factors) {
        const size = base.map((n) => Math.round(n * k));
        const label = size.join(" x ");
        if (seen.has(label) || Math.max(...size) > (s.kind === "grid2d" ? 2048 : 96)) continue;
        seen.add(label);
        const option = document.createElement("option");
        option.value = JSON.stringify(size);
        option.textContent = label;
        gridSelect.appendChild(option);
      }
      gridSelect.value = JSON.stringify(s.grid.slice(0, base.length));
    }

    function describe() {
      const s = app.sim, entry = NCA3D.manifest.models.find((m) => m.name === app.name) || {};
      const prov = entry.provenance || {};
      const credit = [prov.exemplar, prov.license, prov.credit].filter(Boolean).join(" / ");
      $("about").textContent = `${app.name}: ${s.domain} model, ${s.cells} cells` + (credit ? ` - ${credit}` : "");
      $("samplesRow").style.display = s.kind === "grid3d" ? "" : "none";
      $("litRow").style.display = s.kind === "grid2d" && s.model.outputs.some((o) => o.name === "normal") ? "" : "none";
    }

    async function choose(name, grid) {
      $("status").textContent = `loading ${name}...`;
      await app.load(name, grid);
      picker.value = name;
      gridChoices();
      describe();
      $("status").textContent = "";
    }

    picker.addEventListener("change", () => choose(picker.value).catch(report));
    gridSelect.addEventListener("change", () => choose(app.name, JSON.parse(gridSelect.value)).catch(report));
    $("pause").addEventListener("click", () => { app.paused = !app.paused; $("pause").textContent = app.paused ? "Play" : "Pause"; });
    $("reset").addEventListener("click", () => app.sim.reset());
    $("view").addEventListener("click", () => app.resetView());
    const spf = $("spf");
    spf.addEventListener("input", () => { app.stepsPerFrame = Number(spf.value); $("spfValue").textContent = spf.value; });
    $("deterministic").addEventListener("change", (e) => { app.sim.deterministic = e.target.checked; });
    $("lit").addEventListener("change", (e) => { app.lit = e.target.checked; });
    const brush = $("brush");
    brush.addEventListener("input", () => { app.brush = Number(brush.value); });
    const quality = $("scale");
    quality.addEventListener("input", () => { app.renderScale = Number(quality.value); $("scaleValue").textContent = quality.value; });
    const samples = $("samples");
    samples.addEventListener("input", () => { app.samples = Number(samples.value); $("samplesValue").textContent = samples.value; });

    // Mouse: left erases (click or drag), right / middle / ctrl-drag orbits (2D: pans), shift-drag
    // moves the key light, the wheel zooms.
    const canvas = app.canvas;
    let drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      const mode = e.shiftKey ? "light" : (e.button === 0 && !e.ctrlKey && !e.metaKey ? "erase" : "orbit");
      drag = { mode, x: e.clientX, y: e.clientY };
      if (mode === "erase") app.eraseAt(e.offsetX, e.offsetY);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.mode === "erase") app.eraseAt(e.offsetX, e.offsetY);
      else if (drag.mode === "light") {
        const l = app.keyLight;
        let az = Math.atan2(l[0], l[2]) + dx * 0.01;
        let el = Math.max(-1.4, Math.min(1.4, Math.asin(l[1]) - dy * 0.01));
        app.keyLight = [Math.sin(az) * Math.cos(el), Math.sin(el), Math.cos(az) * Math.cos(el)];
      } else if (app.sim.kind === "grid2d") {
        app.pan = [app.pan[0] - dx / app.zoom, app.pan[1] - dy / app.zoom];
      } else app.orbit.rotate(dx, dy);
    });
    canvas.addEventListener("pointerup", () => { drag = null; });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const factor = Math.exp(e.deltaY * 0.001);
      if (app.sim.kind === "grid2d") app.zoom = Math.max(0.05, Math.min(400, app.zoom / factor));
      else app.orbit.zoom(factor);
    }, { passive: false });

    function loop() {
      try {
        app.frame();
        const { fps, stepsPerSecond } = app.speed();
        $("readout").textContent = `${fps.toFixed(1)} FPS  ${Math.round(stepsPerSecond)} steps/s  step ${app.sim.steps}`;
      } catch (error) {
        report(error);
        return;
      }
      if (!NCA3D.stopped) requestAnimationFrame(loop);
    }
    return { choose, loop };
  }

  function report(error) {
    const box = document.getElementById("status");
    if (box) box.textContent = String(error.message || error);
    console.error(error);
  }

  // ------------------------------------------------------------------ the test hook

  function testHook(app, ui) {
    return {
      // Stop the animation loop so the test drives every step itself.
      stop() { NCA3D.stopped = true; return true; },
      async load(name, grid) { await ui.choose(name, grid); return app.info(); },
      info: () => app.info(),
      deterministic(on) { app.sim.deterministic = !!on; return app.sim.deterministic; },
      setState(values) { app.sim.setState(values); return true; },
      getState: () => Array.from(app.sim.getState()),
      step(count) { app.sim.step(count === undefined ? 1 : count); return app.sim.steps; },
      decode: (queries) => Array.from(app.sim.decode(queries)),
      reset() { app.sim.reset(); return true; },
      erase(centre, direction, radius) { app.sim.erase(centre, direction, radius); return true; },
      eraseAt(px, py) { return app.eraseAt(px, py); },
      render() { app.render(); app.gl.finish(); return true; },
      settings(values) { Object.assign(app, values); return true; },
      // Fix the canvas to w x h CSS pixels (a test's screenshot or a 1080p speed figure).
      canvasSize(w, h) { app.canvas.style.width = `${w}px`; app.canvas.style.height = `${h}px`; app.resize(); return [app.canvas.width, app.canvas.height]; },
      canvasRect() { const r = app.canvas.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; },
      // Time `frames` frames of `stepsPerFrame` steps and a full view each (synchronised by a pixel read).
      bench(frames, stepsPerFrame) {
        const gl = app.gl, pixel = new Uint8Array(4);
        app.render();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
        const start = performance.now();
        for (let i = 0; i < frames; i++) { app.sim.step(stepsPerFrame); app.render(); gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel); }
        const seconds = (performance.now() - start) / 1000;
        const stepStart = performance.now();
        app.sim.step(frames * stepsPerFrame);
        app.sim.getState();
        const stepSeconds = (performance.now() - stepStart) / 1000;
        return { fps: frames / seconds, stepsPerSecond: frames * stepsPerFrame / stepSeconds,
          width: app.canvas.width, height: app.canvas.height, renderer: gl.getParameter(gl.RENDERER) };
      },
    };
  }

  NCA3D.start = async function () {
    try {
      const app = new App(document.getElementById("canvas"));
      NCA3D.app = app;
      const ui = setupInterface(app);
      window.nca3dTest = testHook(app, ui);
      const params = new URLSearchParams(window.location.search);
      const first = params.get("model") || (NCA3D.manifest.models[0] || {}).name;
      if (!first) throw new Error("this page holds no models");
      document.getElementById("model").value = first;
      await ui.choose(first);
      if (params.get("deterministic") === "1") { app.sim.deterministic = true; document.getElementById("deterministic").checked = true; }
      if (params.get("test") === "1") NCA3D.stopped = true;
      window.nca3dReady = true;
      if (!NCA3D.stopped) ui.loop();
    } catch (error) {
      window.nca3dFailed = String(error.message || error);
      report(error);
    }
  };

  window.addEventListener("load", () => NCA3D.start());
})();
