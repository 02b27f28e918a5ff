-- srunet: every video frame through SR-UNet (mpv-srunet), on stock mpv.
--
-- How: at on_load, a Python frame server (python -m mpv_srunet.mpv.server, one per
-- mpv) registers the file and serves its upscaled frames as a virtual y4m file over
-- loopback HTTP; this script points mpv at that URL and plays the sound, chapters
-- and subtitles from the original. Debian's mpv has no VapourSynth filter, and this
-- route needs none. Seeks outside mpv's cache become HTTP Range requests, which the
-- server turns into frame-exact decoder seeks.
--
-- Anything wrong (no Python, package missing, bad weights, backend crash, server
-- killed, filter too slow under policy=auto) -> the original video plays, with an
-- OSD line and the reason in the log.
--
-- Options: script-opts/srunet.conf or --script-opts=srunet-KEY=VALUE.
-- Bindings (rebind in input.conf with script-binding srunet/NAME):
--   toggle (Alt+u), compare (Alt+c), stats (Alt+i),
--   strength-up (Alt+=) / strength-down (Alt+-): detail strength +-0.1, live (no reload).

local mp = require "mp"
local msg = require "mp.msg"
local options = require "mp.options"
local utils = require "mp.utils"

local o = {
    enabled = true,          -- start with SR-UNet on (toggle: script-binding srunet/toggle)
    python = "",             -- Python that has mpv_srunet; "" = found next to this script, else python3
    backend = "auto",        -- auto, torch-cpu, onnxruntime, torch-cuda, tensorrt
    weights = "",            -- weights file; "" = the shipped default (a sidecar file wins, see below)
    model = "auto",          -- preset when weights="": default, lite, or auto = the best one that keeps real time
                             -- for the video's size and fps by `mpv-srunet doctor`'s cache (default without one)
    sidecar = true,          -- use VIDEO.srunet.safetensors next to a local video when present
    policy = "auto",         -- filter slower than the video: auto = play the original + OSD; wait = play at the filter's pace
    realtime_margin = 1.0,   -- policy=auto: too slow when ms/frame > margin * (1000 / fps)
    max_height = 0,          -- only upscale videos at most this many lines tall (0 = any)
    only_if_smaller = false, -- only upscale when the upscaled video still fits the display
    compare = false,         -- start in split-screen mode (left bicubic, right SR-UNet)
    readahead_secs = 1.0,    -- upscaled video mpv may buffer ahead: bounds the work wasted by a seek
    start_timeout = 90,      -- seconds to wait for the server and the model (first start imports torch)
    server_log_level = "warning", -- the frame server's log level (its log goes to mpv's log on exit)
    strength = "",           -- detail strength 0 (fidelity) .. 1 (perceptual); "" = the weights' default
}

local VALID = {policy = {auto = true, wait = true}, model = {auto = true, default = true, lite = true}}

local state = {
    enabled = true,
    compare = false,
    server = nil,            -- {port, secret, control_dir, pid} once ready
    server_cmd = nil,        -- async subprocess handle
    server_waiters = nil,    -- callbacks waiting for the server to be ready
    server_failures = 0,
    ready_file = nil,        -- os.tmpname() the server announces itself in (removed once read)
    shutting_down = false,
    req_n = 0,
    active = nil,            -- {resp, source, variant, slow} while the current file is upscaled
    bypass_once = false,     -- next on_load plays the original (fallback)
    resume = nil,            -- position to restart at after a reload
    last_pos = nil,
    stats_timer = nil,
    show_stats = false,
    strength = nil,          -- detail strength asked for (nil: the weights' default)
    strength_busy = false,   -- a strength request is in flight (the latest value is sent after it)
}

-- The strength option as a number in 0..1, or nil ("" or invalid: the weights' default).
local function strength_opt()
    local s = tostring(o.strength or "")
    if s == "" then return nil end
    local v = tonumber(s)
    if not v or v < 0 or v > 1 then
        msg.warn(("invalid strength=%s; expected 0..1, using the weights' default"):format(s))
        return nil
    end
    return v
end

local function validate_opts()
    for key, valid in pairs(VALID) do
        if not valid[o[key]] then
            msg.warn(("invalid %s=%s; using auto"):format(key, tostring(o[key])))
            o[key] = "auto"
        end
    end
end

local function osd(text, secs)
    msg.info(text)
    mp.osd_message("SR-UNet: " .. text, secs or 4)
end

local function is_url(s)
    return s:find("^%a[%w+.-]*://") ~= nil
end

local function encoding()
    return (mp.get_property("o") or "") ~= ""
end

local function file_exists(p)
    local info = utils.file_info(p)
    return info ~= nil and info.is_file
end

local function parent_dir(p)
    return p:gsub("/+$", ""):match("^(.*)/[^/]*$")
end

-- The Python to run: the option, else an interpreter next to this script's package
-- (<prefix>/lib/pythonX.Y/site-packages/mpv_srunet/mpv/srunet -> <prefix>/bin/python3,
-- or a source checkout's .venv), else python3 from PATH.
local function find_python()
    if o.python ~= "" then return o.python end
    local dir = mp.get_script_directory() or ""
    for _ = 1, 6 do
        dir = parent_dir(dir)
        if not dir or dir == "" then break end
        for _, rel in ipairs({"/bin/python3", "/.venv/bin/python3", "/venv/bin/python3"}) do
            if file_exists(dir .. rel) then return dir .. rel end
        end
    end
    return "python3"
end

local function read_file(path)
    local f = io.open(path, "r")
    if not f then return nil end
    local data = f:read("*a")
    f:close()
    return data
end

local function write_file_atomic(path, data)
    local tmp = path:gsub("([^/]*)$", ".%1.tmp")
    local f, err = io.open(tmp, "w")
    if not f then return false, err end
    f:write(data)
    f:close()
    return os.rename(tmp, path)
end

-- Poll `fn` every `every` s until it returns a value (passed to `done`) or `timeout` s pass.
local function poll(every, timeout, fn, done)
    local deadline = mp.get_time() + timeout
    local timer
    timer = mp.add_periodic_timer(every, function()
        local v = fn()
        if v ~= nil then
            timer:kill()
            done(v)
        elseif mp.get_time() > deadline then
            timer:kill()
            done(nil)
        end
    end)
end

local function last_line(s)
    s = (s or ""):gsub("%s+$", "")
    return s:match("([^\n]*)$") or s
end

local function server_failed(reason)
    local waiters = state.server_waiters or {}
    state.server_waiters = nil
    for _, cb in ipairs(waiters) do cb(nil, reason) end
end

local fallback -- forward declaration

local function remove_control_dir(dir)
    for _, name in ipairs(utils.readdir(dir, "files") or {}) do
        os.remove(dir .. "/" .. name)
    end
    os.remove(dir)
end

local function on_server_exit(success, result, err)
    if state.server then remove_control_dir(state.server.control_dir) end
    state.server, state.server_cmd = nil, nil
    if state.shutting_down then return end
    local reason = last_line(result and result.stderr)
    if reason == "" then
        reason = err or ("exit status " .. tostring(result and result.status))
    end
    if result and result.stderr and result.stderr ~= "" then
        msg.verbose("frame server log:\n" .. result.stderr)
    end
    msg.error("frame server stopped: " .. reason)
    state.server_failures = state.server_failures + 1
    server_failed("frame server stopped: " .. reason)
    if state.active then fallback("frame server stopped (" .. reason .. ")") end
end

-- Start the frame server once per mpv; cb(server) or cb(nil, reason).
local function with_server(cb)
    if state.server then return cb(state.server) end
    if state.server_failures >= 2 then return cb(nil, state.no_python or "frame server failed twice; not retrying") end
    if state.server_waiters then table.insert(state.server_waiters, cb) return end
    local python = find_python()
    if python:sub(1, 1) == "/" and not file_exists(python) then -- e.g. the clone it was installed from is gone
        state.server_failures = 2 -- not retried for the next files: the original plays, with this OSD line
        state.no_python = "no Python at " .. python .. " to run the frame server (set python= in script-opts/srunet.conf)"
        return cb(nil, state.no_python)
    end
    state.server_waiters = {cb}
    local ready = os.tmpname()
    state.ready_file = ready
    local args = {python, "-m", "mpv_srunet.mpv.server", "--ready-file", ready,
                  "--mpv-pid", tostring(mp.get_property_number("pid")),
                  "--backend", o.backend, "--log-level", o.server_log_level}
    if o.weights ~= "" then
        table.insert(args, "--weights")
        table.insert(args, o.weights)
    end
    if state.strength then
        table.insert(args, "--strength")
        table.insert(args, tostring(state.strength))
    end
    msg.verbose("starting frame server: " .. table.concat(args, " "))
    state.server_cmd = mp.command_native_async({
        name = "subprocess", args = args, playback_only = false,
        capture_stdout = true, capture_stderr = true,
    }, on_server_exit)
    poll(0.05, o.start_timeout, function()
        if not state.server_waiters then return false end -- exited meanwhile
        local info = utils.parse_json(read_file(ready) or "")
        return info
    end, function(info)
        os.remove(ready)
        state.ready_file = nil
        if not info then
            if state.server_waiters then server_failed("frame server did not start in " .. o.start_timeout .. " s") end
            return
        end
        state.server = info
        msg.verbose(("frame server pid %d on port %d"):format(info.pid, info.port))
        local waiters = state.server_waiters or {}
        state.server_waiters = nil
        for _, w in ipairs(waiters) do w(info) end
    end)
end

-- Send a request through the control directory; cb(resp) (resp.ok false on failure).
local function request(req, timeout, cb)
    local srv = state.server
    if not srv then return cb({ok = false, error = "no frame server"}) end
    state.req_n = state.req_n + 1
    local n = state.req_n
    local ok, err = write_file_atomic(srv.control_dir .. "/req-" .. n .. ".json", utils.format_json(req))
    if not ok then return cb({ok = false, error = "cannot write request: " .. tostring(err)}) end
    local resp_path = srv.control_dir .. "/resp-" .. n .. ".json"
    poll(0.02, timeout, function()
        if state.server ~= srv then return {ok = false, error = "frame server stopped"} end
        return utils.parse_json(read_file(resp_path) or "")
    end, function(resp)
        os.remove(resp_path)
        cb(resp or {ok = false, error = "no answer from the frame server in " .. timeout .. " s"})
    end)
end

local function set_local(name, value)
    local ok, err = mp.set_property_native("file-local-options/" .. name, value)
    if not ok then msg.warn(("cannot set %s: %s"):format(name, tostring(err))) end
end

-- Per-file options that make the virtual y4m file play like the original.
local function apply_stream_options(resp, source)
    local audio = mp.get_property_native("audio-files") or {}
    if resp.audio_files then -- an EDL (ytdl_hook: separate video and audio): its other tracks
        for _, a in ipairs(resp.audio_files) do table.insert(audio, a) end
    elseif resp.has_audio then
        table.insert(audio, source)
    end
    set_local("audio-files", audio)
    if resp.sub_files and #resp.sub_files > 0 then
        local subs = mp.get_property_native("sub-files") or {}
        for _, sub in ipairs(resp.sub_files) do table.insert(subs, sub) end
        set_local("sub-files", subs)
    end
    if not is_url(source) then
        set_local("chapters-file", source)
        if resp.has_subs then
            local subs = mp.get_property_native("sub-files") or {}
            table.insert(subs, source)
            set_local("sub-files", subs)
        end
    end
    local title = mp.get_property("media-title") or source
    set_local("force-media-title", title)
    set_local("stream-lavf-o", {reconnect = "0"}) -- a dead server ends the file now, not after ~11 s of retries
    set_local("hr-seek", "yes")
    local ahead = math.max(4, math.ceil(resp.fps * o.readahead_secs))
    set_local("demuxer-max-bytes", tostring(resp.frame_bytes * ahead))
    set_local("demuxer-max-back-bytes", tostring(resp.frame_bytes * math.ceil(resp.fps)))
    if o.policy == "wait" then -- resume after a few frames, not mpv's default second: smoother slow play
        set_local("cache-pause-wait", tostring(3 / resp.fps))
    end
    local vf = mp.get_property_native("vf") or {}
    table.insert(vf, 1, {name = "format", label = "srunet-colour", enabled = true,
                         params = {colormatrix = resp.colormatrix, colorlevels = resp.colorlevels}})
    set_local("vf", vf)
end

local function close_media(media)
    if state.server and media then request({op = "close", media = media}, 5, function() end) end
end

-- Activation rule and real-time policy; returns nil or why the original plays.
local function skip_reason(resp)
    if o.max_height > 0 and resp.height > o.max_height then
        return ("video is %d lines, max_height=%d"):format(resp.height, o.max_height)
    end
    local dw, dh = mp.get_property_number("display-width"), mp.get_property_number("display-height")
    if o.only_if_smaller and dw and dh and (resp.out_width > dw or resp.out_height > dh) then
        return ("upscaled %dx%d does not fit the %dx%d display"):format(resp.out_width, resp.out_height, dw, dh)
    end
    local budget = 1000 / resp.fps * o.realtime_margin
    if o.policy == "auto" and not encoding() and resp.ms_per_frame > budget then
        return ("too slow here: %.0f ms/frame on %s (%s), the video needs %.0f (policy=auto)"):format(
            resp.ms_per_frame, resp.backend, resp.speed_source == "doctor" and "mpv-srunet doctor" or "timed now",
            1000 / resp.fps)
    end
    return nil
end

local function use_response(resp, source)
    if not resp.ok then
        local e = resp.error or "unknown error"
        if e:find("no video stream", 1, true) then msg.verbose(e) return end
        if source:find("^https?://") and e:find(": cannot open (", 1, true) then
            -- a web page, not a video: mpv's ytdl_hook resolves it (on_load_fail), then we upscale that
            msg.verbose(e)
            return
        end
        osd("off for this file: " .. e, 6)
        return
    end
    local why = skip_reason(resp)
    if why then
        osd("playing the original: " .. why, 5)
        close_media(resp.media)
        return
    end
    local variant = state.compare and "compare" or "sr"
    mp.set_property("stream-open-filename", resp.urls[variant])
    apply_stream_options(resp, source)
    state.active = {resp = resp, source = source, variant = variant, slow = 0}
    msg.info(("upscaling %dx%d -> %dx%d with %s (%s), %.1f ms/frame"):format(
        resp.width, resp.height, resp.out_width, resp.out_height, resp.backend, resp.model, resp.ms_per_frame))
end

local function absolute(source)
    if is_url(source) or source:sub(1, 1) == "/" then return source end
    return utils.join_path(utils.getcwd(), source)
end

local function on_load(hook, failed_before)
    state.active = nil
    if not failed_before then
        state.bypassed = false
        if state.resume then
            set_local("start", tostring(state.resume))
            state.resume = nil
        end
        if state.bypass_once then
            state.bypass_once, state.bypassed = false, true
            return
        end
    end
    if not state.enabled or state.bypassed then return end
    local source = mp.get_property("stream-open-filename", "")
    if source == "" or source:find("^http://127%.0%.0%.1:%d+/[%w_-]+/%d+/%a+%.y4m$") then return end
    if source:find("^%a+://") and not source:find("^https?://") and not source:find("^file://")
            and not source:find("^edl://") then -- edl://: ytdl_hook's separate video + audio
        msg.verbose("not a file, http(s) or EDL URL, playing as is: " .. source)
        return
    end
    source = absolute(source)
    hook:defer()
    -- mpv waits for this hook even when the user quits or skips the file: watch playback-abort
    local done, abort_timer = false, nil
    local function finish()
        if done then return false end
        done = true
        abort_timer:kill()
        hook:cont()
        return true
    end
    abort_timer = mp.add_periodic_timer(0.1, function()
        if mp.get_property_bool("playback-abort", false) then
            msg.verbose("playback aborted while the frame server was preparing")
            finish()
        end
    end)
    with_server(function(srv, err)
        if done then return end
        if not srv then
            osd("off: " .. err, 6)
            return finish()
        end
        request({op = "register", source = source, weights = o.weights, backend = o.backend, sidecar = o.sidecar,
                 model = o.model,
                 strength = state.strength},
                o.start_timeout, function(resp)
            if done then return close_media(resp.media) end
            use_response(resp, source)
            finish()
        end)
    end)
end

-- Restart the current playlist entry at the current position (SR on/off, compare, fallback).
local function reload(bypass)
    state.resume = mp.get_property_number("time-pos") or state.last_pos
    state.bypass_once = bypass
    mp.commandv("playlist-play-index", "current")
end

fallback = function(reason)
    osd("playing the original: " .. reason, 6)
    state.active = nil
    reload(true)
end

local function read_stats()
    local a, srv = state.active, state.server
    if not a or not srv then return nil end
    return utils.parse_json(read_file(srv.control_dir .. "/stats-" .. a.resp.media .. ".json") or "")
end

local function stats_text(s)
    local a = state.active
    if not a then return "SR-UNet: off (original video)" end
    local r = a.resp
    local lines = {
        ("SR-UNet %s%s"):format(r.backend, a.variant == "compare" and "  [compare: left bicubic | right SR]" or ""),
        ("model: %s, detail strength %s"):format(r.model, r.strength and ("%.2f"):format(r.strength) or "n/a"),
        ("%dx%d -> %dx%d @ %.3f fps"):format(r.width, r.height, r.out_width, r.out_height, r.fps),
        ("filter %.1f ms/frame, total %.1f ms/frame, budget %.1f ms"):format(
            s and s.model_ms or r.ms_per_frame, s and s.total_ms or 0, 1000 / r.fps),
        ("late %d  dropped %d (vo) %d (decoder)  frames served %d"):format(
            mp.get_property_number("vo-delayed-frame-count", 0), mp.get_property_number("frame-drop-count", 0),
            mp.get_property_number("decoder-frame-drop-count", 0), s and s.frames or 0),
    }
    return table.concat(lines, "\n")
end

-- Twice a second while upscaling: backend failure -> original; policy=auto -> original
-- when mpv keeps waiting for frames the filter cannot deliver in time.
local function monitor()
    state.last_pos = mp.get_property_number("time-pos") or state.last_pos
    local s = read_stats()
    if state.show_stats then mp.osd_message(stats_text(s), 1) end
    local a = state.active
    if not a or not s then return end
    if s.fallback then
        msg.error("SR-UNet backend failed: " .. tostring(s.error))
        return fallback("the SR-UNet backend failed (" .. tostring(s.error) .. ")")
    end
    if s.source_error then -- cut/stalled connection, or a seek the source cannot do
        msg.error("reading the source failed: " .. tostring(s.source_error))
        return fallback("reading the source failed (" .. tostring(s.source_error) .. ")")
    end
    if o.policy ~= "auto" or encoding() then return end
    local starving = mp.get_property_bool("paused-for-cache", false)
    if starving and s.total_ms > 1000 / a.resp.fps * o.realtime_margin then
        a.slow = a.slow + 1
    else
        a.slow = 0
    end
    if a.slow >= 4 then
        fallback(("the filter is too slow (%.0f ms/frame, %.0f needed)"):format(s.total_ms, 1000 / a.resp.fps))
    end
end

local function toggle()
    state.enabled = not state.enabled
    osd(state.enabled and "on" or "off", 2)
    if mp.get_property("path") then reload(false) end
end

local function toggle_compare()
    state.compare = not state.compare
    osd(state.compare and "compare: left bicubic | right SR-UNet" or "compare off", 2)
    if state.active then reload(false) end
end

local function toggle_stats()
    state.show_stats = not state.show_stats
    mp.osd_message(state.show_stats and stats_text(read_stats()) or "", state.show_stats and 1 or 0)
end

local function on_end_file(ev)
    local a = state.active
    state.active = nil
    if a then
        if ev.reason == "error" then msg.warn("upscaled stream failed: " .. tostring(ev.file_error)) end
        close_media(a.resp.media)
    end
end

-- mpv kills the server with its other subprocesses; the control directory is ours to remove.
local function on_shutdown()
    state.shutting_down = true
    local srv = state.server
    if srv then
        local f = io.open(srv.control_dir .. "/quit", "w")
        if f then f:close() end
    end
    if state.server_cmd then mp.abort_async_command(state.server_cmd) end
    if srv then remove_control_dir(srv.control_dir) end
    if state.ready_file then os.remove(state.ready_file) end
end

-- Detail strength, live: the server re-blends the weights and swaps them between two frames;
-- frames rendered from then on show it (what mpv has buffered, <= readahead_secs, plays first).
-- One request at a time; the latest value is sent when the one in flight is answered.
local function send_strength()
    local a = state.active
    if not a or not state.server or state.strength == nil or state.strength_busy then return end
    local v = state.strength
    state.strength_busy = true
    request({op = "strength", value = v}, 60, function(resp)
        state.strength_busy = false
        if not resp.ok then
            osd("detail strength: " .. tostring(resp.error), 5)
            return
        end
        if state.active then state.active.resp.strength = resp.strength end
        if state.strength ~= v then return send_strength() end
        mp.commandv("script-message", "srunet-strength", ("%.2f"):format(v)) -- for other scripts (and tests)
    end)
end

local function step_strength(delta)
    local a = state.active
    local cur = a and a.resp.strength
    if a and cur == nil then
        return osd("detail strength: n/a (these weights have one endpoint)", 3)
    end
    cur = state.strength or cur or 0.9
    local v = math.max(0, math.min(1, math.floor((cur + delta) * 100 + 0.5) / 100))
    state.strength = v
    osd(("detail strength %.2f (0 fidelity, 1 perceptual)"):format(v), 2)
    send_strength()
end

options.read_options(o, "srunet", function(changed)
    validate_opts()
    if changed.enabled then state.enabled = o.enabled end
    if changed.compare then state.compare = o.compare end
    if changed.strength then
        state.strength = strength_opt()
        send_strength()
    end
end)
validate_opts()
state.enabled, state.compare = o.enabled, o.compare
state.strength = strength_opt()

mp.add_key_binding("Alt+u", "toggle", toggle)
mp.add_key_binding("Alt+c", "compare", toggle_compare)
mp.add_key_binding("Alt+i", "stats", toggle_stats)
mp.add_key_binding("Alt+=", "strength-up", function() step_strength(0.1) end, {repeatable = true})
mp.add_key_binding("Alt+-", "strength-down", function() step_strength(-0.1) end, {repeatable = true})
mp.register_script_message("toggle", toggle)
mp.add_hook("on_load", 50, on_load)
-- a page URL mpv could not open: ytdl_hook (priority 10) has just resolved it to a stream or an EDL
mp.add_hook("on_load_fail", 50, function(hook) on_load(hook, true) end)
mp.register_event("end-file", on_end_file)
mp.register_event("shutdown", on_shutdown)
state.stats_timer = mp.add_periodic_timer(0.5, monitor)
