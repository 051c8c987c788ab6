#!/usr/bin/env sh
# The same calls with curl. BLUESMINDS_KEY=bm-... sh examples/curl.sh
base=${BLUESMINDS_URL:-http://127.0.0.1:8080}
curl -s "$base/v1/chat/completions" -H "Authorization: Bearer $BLUESMINDS_KEY" -H "Content-Type: application/json" \
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'
echo
curl -sN "$base/v1/chat/completions" -H "Authorization: Bearer $BLUESMINDS_KEY" -H "Content-Type: application/json" \
  -d '{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Hello"}]}'
echo
# Admin: health of every upstream, and a reload (the admin key comes from admin.key_env).
curl -s "$base/api/admin/health" -H "Authorization: Bearer $BLUESMINDS_ADMIN_KEY"
echo
