-- Helpers shared by the example modules (loaded with require("util")).
local util = {}

-- Decodes JSON text, or returns the text itself when it is not JSON.
function util.try_json(text)
  local ok, value = pcall(json.decode, text)
  if ok then
    return value
  end
  return text
end

return util
